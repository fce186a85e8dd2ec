"""Task2Vec: probe networks, the three Fisher estimators, distances, known-answer tasks, checkpoints."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import distance as sp_distance

from workbench.checkpoints import save_checkpoint
from workbench.errors import DataError, ParameterError
from workbench.methods import task2vec as t2v
from workbench.methods.task2vec import Embedding, Task2Vec, distance, distance_matrix
from workbench.models.resnet import ResNet, ResNetConfig, load_torchvision_resnet, resnet18, resnet34

TINY = ResNetConfig(depth=10, widths=(4, 4, 8, 8), num_classes=5, in_channels=1, stem="small", input_size=12,
                    mean=(0.5,), std=(0.5,))


def tiny_probe(seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    probe = ResNet(TINY)
    for m in probe.modules():  # non-trivial BatchNorm statistics, so BN gradients are not degenerate
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return probe.eval()


def tiny_task(n: int = 48, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 12, 12, generator=g) * 2 - 1, torch.arange(n) % classes


FAST = dict(samples_per_epoch=640)  # 10 batches per epoch instead of 156: the maths is the same

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_task2vec():
    """benchmarks/bench_task2vec.py, which runs the released code (../shared/reference/aws-cv-task2vec)."""
    sys.path.insert(0, str(BENCHMARKS))
    import bench_task2vec

    return bench_task2vec


def sorted_task(n: int = 150, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images sorted by class, as Omniglot's tasks are (the released truncation and caching go in dataset order)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 12, 12, generator=g) * 2 - 1, torch.arange(n) * classes // n


# ---------------------------------------------------------------------------------------------------------------
# Probe networks
# ---------------------------------------------------------------------------------------------------------------


def torchvision_keys(blocks: tuple[int, ...]) -> list[str]:
    """torchvision's ResNet (BasicBlock) state-dict keys, written out independently of our model."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{k}" for k in bn]
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            keys += [f"{p}.conv1.weight"] + [f"{p}.bn1.{k}" for k in bn]
            keys += [f"{p}.conv2.weight"] + [f"{p}.bn2.{k}" for k in bn]
            if b == 0 and stage > 1:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{k}" for k in bn]
    return keys + ["fc.weight", "fc.bias"]


def test_resnets_have_torchvision_keys_sizes_and_the_official_layer_list():
    for model, blocks, n_params in ((resnet18(), (2, 2, 2, 2), 11_689_512), (resnet34(), (3, 4, 6, 3), 21_797_672)):
        assert list(model.state_dict()) == torchvision_keys(blocks)
        assert sum(p.numel() for p in model.parameters()) == n_params  # torchvision's counts
        layers = model.layers
        assert [type(m).__name__ for m in layers] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Sequential",
                                                      "Sequential", "Sequential", "Sequential", "AdaptiveAvgPool2d",
                                                      "Flatten", "Linear"]
        assert layers[6] is model.layer3 and layers[-1] is model.fc  # skip_layers=6 starts at layer3
    # Embedding sizes of the official code for ResNet-34 (one entry per conv filter and BN channel): 17,024 / 13,824.
    model = resnet34()
    for skip, dim in ((0, 17_024), (6, 13_824)):
        tail = t2v._Tail(model.layers[skip:-1], torch.nn.Linear(512, 3))
        assert sum(tail.get_parameter(k).shape[0] for _, k in t2v._fisher_entries(model, tail)) == dim
    model = tiny_probe()
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        h = x
        for layer in model.layers[:6]:
            h = layer(h)
        assert torch.allclose(model(h, start_from=6), model(x), atol=1e-6)


def test_torchvision_format_state_dict_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    source = resnet18()
    path = tmp_path / "resnet18-random.pth"
    torch.save(source.state_dict(), path)  # exactly how torchvision's files are stored: a plain state dict
    loaded = load_torchvision_resnet(path, depth=18)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # Older torchvision files have no num_batches_tracked: still accepted.
    old = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    load_torchvision_resnet(tmp_path / "old.pth", depth=18)
    # A ResNet-34 file read as a ResNet-18, or a wrong hash: clear errors.
    torch.save(resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(DataError, match="does not fit ResNet.*unexpected"):
        load_torchvision_resnet(tmp_path / "r34.pth", depth=18)
    with pytest.raises(DataError, match="sha256"):
        load_torchvision_resnet(path, depth=18, sha256="0" * 64)
    with pytest.raises(DataError, match="no ResNet weights"):
        load_torchvision_resnet(tmp_path / "missing.pth")
    # torchvision names its files after the first 8 hex digits of their sha256: imagenet_probe checks that.
    from workbench.checkpoints import sha256_of
    from workbench.models.resnet import imagenet_probe

    named = tmp_path / f"resnet18-{sha256_of(path)[:8]}.pth"
    shutil.copy(path, named)
    assert imagenet_probe(18, named).config.input_size == 112
    shutil.copy(path, tmp_path / "resnet18-00000000.pth")
    with pytest.raises(DataError, match="does not start with 00000000"):
        imagenet_probe(18, tmp_path / "resnet18-00000000.pth")


def test_shipped_probes_recorded_held_out_accuracy_is_what_it_measures():
    """Re-score the shipped probe on the images it never trained on (drawers 15-19 of the 964 background
    characters) instead of trusting the number in its card."""
    from workbench.data import load_omniglot
    from workbench.models.omniglot_probe import TRAIN_DRAWERS, _accuracy

    probe = t2v.load_probe()
    o = load_omniglot(28)
    background = np.flatnonzero(o.characters["set"].to_numpy() == "background")
    held_out = o.by_class()[background][:, TRAIN_DRAWERS:]
    x = torch.from_numpy(held_out.reshape(-1, 1, 28, 28).copy())
    y = torch.arange(len(background)).repeat_interleave(held_out.shape[1])
    measured = _accuracy(probe, x, y)
    assert measured > 0.7  # far above the 1/964 of chance
    assert measured == pytest.approx(probe.meta["metrics"]["heldout_accuracy"], abs=2e-3)  # 4,820 images: ~10 of them


def test_shipped_probe_loads_and_tampering_or_wrong_shapes_are_refused(tmp_path):
    from workbench.models.omniglot_probe import weights_sha256

    probe = t2v.load_probe()
    assert probe.config.num_classes == 964 and len(probe.layers) == 11
    # `workbench train task2vec-probe --profile full` reproduces these exact weights (checked on this machine)
    assert probe.meta["weights_sha256"] == weights_sha256(probe.state_dict())
    src = probe_path()
    copy = tmp_path / src.name
    shutil.copy(src, copy)
    shutil.copy(src.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        t2v.load_probe(copy)
    # A checkpoint whose tensors do not fit the architecture recorded in its meta.
    wrong = ResNet(ResNetConfig(**{**probe.config.to_meta(), "widths": (8, 16, 32, 64), "mean": (0.5,), "std": (0.5,)}))
    path = save_checkpoint(tmp_path / "wrong.pt", wrong.state_dict(), {"config": probe.config.to_meta()})
    with pytest.raises(DataError, match="shape mismatches"):
        t2v.load_probe(path)


def probe_path():
    from workbench.paths import checkpoints_dir

    return checkpoints_dir() / "task2vec_probe.pt"


# ---------------------------------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------------------------------


def test_closed_form_per_sample_gradients_equal_vmap():
    probe = tiny_probe()
    x = torch.randn(20, 1, 12, 12)
    head = torch.nn.Linear(8, 3)
    tail = t2v._Tail(probe.layers[0:-1], head).eval()
    weights = {key: tail.get_parameter(key) for _, key in t2v._fisher_entries(probe, tail)}
    assert any("bn" in k for k in weights) and any("downsample" in k for k in weights)
    y = torch.randint(0, 3, (20,))
    w = torch.rand(20)
    a = t2v.sum_sq_grads_vmap(tail, weights, x, y, w, chunk_size=7)
    b = t2v.sum_sq_grads_closed_form(tail, weights, x, y, w, chunk_size=6)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-9 * float(a[k].abs().max())), k
    # and a direct loop over samples
    k0 = next(iter(weights))
    direct = torch.zeros_like(weights[k0])
    for i in range(20):
        wi = weights[k0].detach().clone().requires_grad_(True)
        out = torch.func.functional_call(tail, {k0: wi}, (x[i:i + 1],))
        g, = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y[i:i + 1]), wi)
        direct += w[i] * g * g
    assert torch.allclose(direct, b[k0], rtol=1e-4)


def test_sampled_labels_and_gaussian_output_gradients_estimate_the_exact_fisher():
    """Both per-sample variants are unbiased for diag(E_x J^T (diag p - p p^T) J)."""
    probe = tiny_probe()
    x = torch.randn(12, 1, 12, 12)
    head = torch.nn.Linear(8, 3)
    head.weight.data *= 3  # confident predictions: the regime where rare sampled labels dominate
    tail = t2v._Tail(probe.layers[0:-1], head).eval()
    weights = {key: tail.get_parameter(key) for _, key in t2v._fisher_entries(probe, tail)}
    w = torch.full((12,), 1 / 12)
    with torch.no_grad():
        p = torch.softmax(tail(x), 1)
    exact = {k: torch.zeros_like(v) for k, v in weights.items()}
    for c in range(3):  # the exact Fisher: sum over classes of p_c g_c^2
        part = t2v.sum_sq_grads_closed_form(tail, weights, x, torch.full((12,), c), w * p[:, c])
        for k in exact:
            exact[k] += part[k]
    gen = torch.Generator().manual_seed(0)
    errors = {}
    for kind in ("sampled", "gaussian"):
        draws = []
        for _ in range(120):
            y = torch.multinomial(p, 1, generator=gen).view(-1) if kind == "sampled" else t2v.gaussian_output_gradients(p, gen)
            draws.append(torch.cat([v.flatten() for v in t2v.sum_sq_grads_closed_form(tail, weights, x, y, w).values()]))
        draws = torch.stack(draws)
        target = torch.cat([v.flatten() for v in exact.values()])
        errors[kind] = float((draws.mean(0) - target).norm() / target.norm())
    assert errors["sampled"] < 0.2 and errors["gaussian"] < 0.2, errors


def test_fast_head_fit_is_torch_adam_step_for_step():
    torch.manual_seed(0)
    x, y = torch.randn(90, 16), torch.arange(90) % 4
    fast, history = t2v.fit_head(x, y, 4, epochs=3, samples_per_epoch=640, generator=torch.Generator().manual_seed(3))
    slow = t2v.fit_head_autograd(x, y, 4, epochs=3, samples_per_epoch=640, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(fast.weight, slow.weight, atol=1e-5) and torch.allclose(fast.bias, slow.bias, atol=1e-5)
    assert len(history) == 3 and history[-1] < history[0]


@pytest.mark.parametrize("kwargs", [dict(fisher="per_sample"), dict(fisher="per_sample", fisher_labels="sampled"),
                                    dict(fisher="per_sample", engine="vmap"), dict(fisher="batch"),
                                    dict(fisher="batch", bn_mode="train"), dict(official=True),
                                    dict(official=True, engine="loop"), dict(method="variational", variational_epochs=1)])
def test_every_estimator_runs_and_leaves_the_probe_untouched(kwargs):
    probe = tiny_probe()
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    kwargs = dict(kwargs)
    make = Task2Vec.official if kwargs.pop("official", False) else Task2Vec
    e = make(probe, **kwargs, **FAST).embed(tiny_task(), name="noise")
    assert np.all(np.isfinite(e.hessian)) and e.hessian.shape == e.scale.shape
    assert all(torch.equal(before[k], v) for k, v in probe.state_dict().items())  # we work on a copy
    assert not probe.training
    n_conv = sum(m.out_channels for m in probe.modules() if isinstance(m, torch.nn.Conv2d))
    n_bn = sum(m.num_features for m in probe.modules() if isinstance(m, torch.nn.BatchNorm2d))
    if kwargs.get("method") == "variational":
        assert e.dim == n_conv and np.all(e.hessian > 0) and np.all(e.scale > 0)  # positive precisions
    else:
        assert e.dim == n_conv + n_bn and np.all(e.scale == 1) and np.all(e.hessian >= 0)
    names = [name for name, _, _ in e.meta["layers"]]
    assert names[:2] == (["conv1", "layer1.0.conv1"] if kwargs.get("method") else ["conv1", "bn1"])


def test_skip_layers_restricts_the_embedding_to_the_last_stages():
    probe = tiny_probe()
    e = Task2Vec(probe, skip_layers=6, **FAST).embed(tiny_task())
    names = [n for n, _, _ in e.meta["layers"]]
    assert names[0].startswith("layer3") and all(n.startswith(("layer3", "layer4")) for n in names)


def test_same_seed_same_embedding_other_seed_different():
    probe = tiny_probe()
    task = tiny_task()
    a = Task2Vec(probe, seed=0, **FAST).embed(task)
    b = Task2Vec(probe, seed=0, **FAST).embed(task)
    c = Task2Vec(probe, seed=1, **FAST).embed(task)
    assert np.array_equal(a.hessian, b.hessian)
    assert not np.array_equal(a.hessian, c.hessian)
    state = torch.get_rng_state()
    Task2Vec(probe, seed=5, **FAST).embed(task)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left alone


def test_fit_is_scikit_learn_style():
    """Hyperparameters in the constructor, ``fit`` returns self, learned state ends in ``_``."""
    probe = tiny_probe()
    tasks = {"a": tiny_task(seed=0), "b": tiny_task(seed=1, classes=4)}
    est = Task2Vec(probe, **FAST)
    assert est.fit(tasks) is est
    assert est.task_names_ == ["a", "b"] and len(est.embeddings_) == 2 and est.distances_.shape == (2, 2)
    assert np.array_equal(est.embeddings_[0].hessian, Task2Vec(probe, **FAST).embed(tasks["a"]).hessian)
    assert est.seed == 0 and est.samples_per_epoch == 640 and hasattr(est, "head_")
    official = Task2Vec.official(probe, **FAST)
    assert (official.fisher, official.bn_mode, official.protocol) == ("batch", "train", "released")


def test_released_random_draws_are_those_of_its_dataloader_and_linear_head():
    """The official mode's sampler and head initialisation consume a seeded generator exactly as the released code
    consumes the global one: a DataLoader over a WeightedRandomSampler (float64 weights), and nn.Linear."""
    from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 70)
    y = labels.numpy()
    counts = np.eye(3)[y].sum(0)
    weights = 1.0 / counts[y] / 3
    torch.manual_seed(7)
    head = torch.nn.Linear(8, 3)
    loader = DataLoader(TensorDataset(torch.zeros(150, 1), labels), batch_size=64, drop_last=True,
                        sampler=WeightedRandomSampler(weights / weights.sum(), num_samples=640))
    released = [[b for _, b in loader] for _ in range(2)]  # two epochs
    after = torch.rand(3)
    gen = torch.Generator().manual_seed(7)
    w, b = t2v.linear_init(8, 3, gen)
    ours = [t2v.released_loader_batches(labels, 640, 64, gen) for _ in range(2)]
    assert torch.equal(w, head.weight.data) and torch.equal(b, head.bias.data)
    assert all(torch.equal(labels[i], r) for epoch_o, epoch_r in zip(ours, released) for i, r in zip(epoch_o, epoch_r))
    assert torch.equal(torch.rand(3, generator=gen), after)  # and the generators are left in the same state
    # Dataset-order truncation: the first floor(max_samples / 64) - 1 batches.
    assert t2v.released_truncation(300, 1000, 64) == 300 and t2v.released_truncation(1000, 300, 64) == 192
    assert t2v.released_truncation(1000, None, 64) == 1000
    with pytest.raises(ParameterError, match="keeps no batch"):
        t2v.released_truncation(1000, 100, 64)


@pytest.mark.parametrize("skip_layers", [0, 6])
def test_official_mode_matches_the_released_code_seeded_the_same(skip_layers):
    """Task2Vec.official reproduces awslabs/aws-cv-task2vec (run unmodified from ../shared/reference) draw for draw:
    with the same seed, same probe and task, the embeddings agree to float rounding (rtol 1e-4; measured ~2e-6),
    both engines, with and without skipped layers. The task is sorted by class and max_samples truncates it, so the
    dataset-order truncation and caching (train-mode BatchNorm over class-sorted batches) are exercised."""
    bench = bench_task2vec()
    if not bench.released_available():
        pytest.skip(f"the released Task2Vec code is not at {bench.REFERENCE} (../shared/reference/aws-cv-task2vec)")
    probe = tiny_probe()
    images, labels = sorted_task()
    opts = dict(skip_layers=skip_layers, max_samples=200)  # keeps the first 2 batches of 64: 128 of 150 images
    for seed in (0, 3):
        released = bench.released_embed(probe, images, labels, seed=seed, num_samples=640, head_epochs=2, **opts)
        for engine in ("loop", "fast"):
            ours = Task2Vec.official(probe, engine=engine, seed=seed, samples_per_epoch=640, head_epochs=2,
                                     **opts).embed((images, labels)).hessian
            assert ours.shape == released.shape
            assert np.allclose(ours, released, rtol=1e-4, atol=1e-6 * released.max()), (seed, engine)
    other = Task2Vec.official(probe, seed=1, samples_per_epoch=640, head_epochs=2, **opts).embed((images, labels))
    assert not np.allclose(other.hessian, released, rtol=1e-2)  # a different seed is a different Monte Carlo draw


@pytest.mark.parametrize("kwargs", [dict(official=True), dict(official=True, bn_mode="eval"),
                                    dict(fisher="batch"), dict(fisher="batch", bn_mode="train", skip_layers=4)])
def test_fast_batch_engine_equals_the_plain_loop(kwargs):
    """The fast engine (channels-last memory, no BatchNorm running averages) draws the same batches and labels and
    sums the same squared gradients as the plain loop: equal to float rounding."""
    kwargs = dict(kwargs)
    make = Task2Vec.official if kwargs.pop("official", False) else Task2Vec
    probe = tiny_probe()
    task = sorted_task()
    loop = make(probe, engine="loop", **kwargs, **FAST).embed(task)
    fast = make(probe, engine="fast", **kwargs, **FAST).embed(task)
    assert loop.meta["engine"] == "loop" and fast.meta["engine"] == "fast"
    assert np.allclose(fast.hessian, loop.hessian, rtol=1e-4, atol=1e-6 * loop.hessian.max())


def test_fast_head_fit_with_a_given_init_and_the_released_sampler_is_torch_adam():
    torch.manual_seed(0)
    x, y = torch.randn(90, 16), torch.arange(90) // 30
    init = t2v.linear_init(16, 3, torch.Generator().manual_seed(1))
    opts = dict(epochs=2, samples_per_epoch=640, init=init, sampler="released")
    fast, _ = t2v.fit_head(x, y, 3, generator=torch.Generator().manual_seed(3), **opts)
    slow = t2v.fit_head_autograd(x, y, 3, generator=torch.Generator().manual_seed(3), **opts)
    assert torch.allclose(fast.weight, slow.weight, atol=1e-5) and torch.allclose(fast.bias, slow.bias, atol=1e-5)


def test_truncation_is_stratified_not_dataset_order():
    labels = torch.arange(10).repeat_interleave(30)  # sorted by class, as many datasets are
    idx = t2v.stratified_subset(labels, 100, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[idx], minlength=10)
    assert len(idx) == 100 and counts.min() == 10 == counts.max()
    # The official code keeps the first floor(100/64) - 1 = 0 batches... with 1000 it keeps 896 sorted samples:
    # classes 0..2 only of this dataset. Ours keeps every class whatever max_samples is.
    idx = t2v.stratified_subset(labels, 15, torch.Generator().manual_seed(0))
    assert set(labels[idx].tolist()) == set(range(10))


def test_clear_errors_for_bad_parameters_and_tasks():
    probe = tiny_probe()
    with pytest.raises(ParameterError, match="method"):
        Task2Vec(probe, method="fisher")
    with pytest.raises(ParameterError, match="bn_mode='eval'"):
        Task2Vec(probe, fisher="per_sample", bn_mode="train")
    with pytest.raises(ParameterError, match="protocol='released'"):
        Task2Vec(probe, protocol="released")
    with pytest.raises(ParameterError, match="does not apply"):
        Task2Vec(probe, fisher="batch", engine="vmap")
    with pytest.raises(ParameterError, match="does not apply"):
        Task2Vec(probe, engine="fast")
    with pytest.raises(ParameterError, match="skip_layers"):
        Task2Vec(probe, skip_layers=10)
    with pytest.raises(ParameterError, match="layers"):
        Task2Vec(torch.nn.Linear(3, 3))
    with pytest.raises(DataError, match="single class"):
        Task2Vec(probe).embed((torch.zeros(8, 12, 12), torch.zeros(8)))
    with pytest.raises(DataError, match="NaN"):
        Task2Vec(probe).embed((torch.full((8, 12, 12), float("nan")), torch.arange(8) % 2))


# ---------------------------------------------------------------------------------------------------------------
# Distances and selection
# ---------------------------------------------------------------------------------------------------------------


def random_embeddings(n: int = 5, d: int = 40, seed: int = 0, **meta) -> list[Embedding]:
    rng = np.random.default_rng(seed)
    return [Embedding(rng.gamma(0.5, 1.0, d), rng.gamma(2.0, 1.0, d), {"task": str(i), **meta}) for i in range(n)]


def test_distances_follow_the_official_formulas():
    e0, e1 = random_embeddings(2)
    h0, h1 = e0.hessian, e1.hessian
    s = h0 + h1 + 1e-8
    assert distance(e0, e1) == pytest.approx(sp_distance.cosine(h0 / s, h1 / s))
    v0, v1 = 1 / h0, 1 / h1
    assert distance(e0, e1, "correlation") == pytest.approx(sp_distance.correlation(v0, v1))
    kl0 = 0.5 * (v0 / v1 - 1 + np.log(v1) - np.log(v0))
    kl1 = 0.5 * (v1 / v0 - 1 + np.log(v0) - np.log(v1))
    assert distance(e0, e1, "kl") == pytest.approx(np.maximum(kl0, kl1).sum())
    assert distance(e0, e1, "asymmetric_kl") == pytest.approx(kl0.sum())
    p = h0 / s
    assert distance(e0, e1, "entropy") == pytest.approx(np.log(2) + np.mean(p * np.log(p) + (1 - p) * np.log(1 - p)))
    assert distance(e0, e1, "normalized_cosine") == pytest.approx(sp_distance.cosine(v0 * e0.scale, v1 * e1.scale))
    es = random_embeddings(6)
    for metric in t2v.DISTANCES:
        D = distance_matrix(es, metric)
        expected = np.array([[0.0 if i == j else distance(a, b, metric) for j, b in enumerate(es)]
                             for i, a in enumerate(es)])
        assert np.allclose(D, expected, rtol=1e-6, atol=1e-9), metric  # the 1e-8 in h0+h1+1e-8 is not symmetric
    with pytest.raises(ParameterError, match="unknown distance"):
        distance(e0, e1, "euclid")


def gaussian_kl_by_quadrature(var_p: float, var_q: float) -> float:
    """KL(N(0, var_p) || N(0, var_q)) by numerical integration: no closed form involved."""
    from scipy import integrate, stats

    p, q = stats.norm(0, np.sqrt(var_p)), stats.norm(0, np.sqrt(var_q))
    bound = 12 * np.sqrt(max(var_p, var_q))
    return integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -bound, bound, limit=200)[0]


def test_jsd_complexity_and_cross_distances_by_hand():
    e0, e1 = random_embeddings(2, d=6, seed=3)
    v0, v1 = 1 / e0.hessian, 1 / e1.hessian
    # jsd: per filter, the mean KL of each Gaussian posterior to the one with the average variance, averaged
    by_hand = np.mean([0.5 * (gaussian_kl_by_quadrature(a, (a + b) / 2) + gaussian_kl_by_quadrature(b, (a + b) / 2))
                       for a, b in zip(v0, v1)])
    assert t2v.jsd(e0, e1) == pytest.approx(by_hand, rel=1e-6)
    assert t2v.jsd(e1, e0) == pytest.approx(t2v.jsd(e0, e1)) and t2v.jsd(e0, e0) == pytest.approx(0, abs=1e-12)
    # the KL distance, one filter at a time, by quadrature too
    kl = [max(gaussian_kl_by_quadrature(a, b), gaussian_kl_by_quadrature(b, a)) for a, b in zip(v0, v1)]
    assert distance(e0, e1, "kl") == pytest.approx(sum(kl), rel=1e-6)
    # complexity = d(e, t0), t0 = the prior (hessian = scale); the prior itself has complexity 0
    t0 = t2v.trivial_embedding(e0)
    s = e0.hessian + e0.scale + 1e-8
    assert t2v.complexity(e0) == pytest.approx(sp_distance.cosine(e0.hessian / s, e0.scale / s))
    assert t2v.complexity(t0) == pytest.approx(0, abs=1e-12)
    # a task with a sharper posterior (larger Fisher) is farther from the prior: more complex
    sharper = Embedding(e0.hessian * 50, e0.scale, dict(e0.meta))
    assert t2v.complexity(sharper) > t2v.complexity(e0)
    # cross distances: every entry is the pairwise distance; sources = targets gives the symmetric matrix
    src, tgt = random_embeddings(3, seed=4), random_embeddings(2, seed=5)
    for metric in ("cosine", "asymmetric_kl", "jsd"):
        C = t2v.cross_distance_matrix(src, tgt, metric)
        assert C.shape == (3, 2)
        assert np.allclose(C, [[distance(a, b, metric) for b in tgt] for a in src])
    assert np.allclose(t2v.cross_distance_matrix(src, src), distance_matrix(src), atol=1e-12)
    with pytest.raises(ParameterError, match="unknown distance"):
        t2v.cross_distance_matrix(src, tgt, "euclid")


class FlatFeatures(torch.nn.Module):
    """A 'probe' whose features are the raw pixels (``layers[:-1]`` = flatten): its task accuracy is plain
    logistic regression on pixels, so the answer is known."""

    def __init__(self, pixels: int, classes: int) -> None:
        super().__init__()
        self.flat, self.fc = torch.nn.Flatten(), torch.nn.Linear(pixels, classes)
        self.layers = [self.flat, self.fc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(x))


def test_task_accuracy_is_high_on_a_separable_task_and_chance_on_random_labels():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    images = torch.randn(300, 6, 6, generator=g) * 0.3
    images[torch.arange(300), labels, labels] += 3.0  # class c lights pixel (c, c)
    model = FlatFeatures(36, 3)
    assert t2v.task_accuracy(model, (images, labels)) > 0.95
    shuffled = labels[torch.randperm(300, generator=g)]
    assert t2v.task_accuracy(model, (images, shuffled)) < 0.55  # chance is 1/3; 75 test images


def test_expert_study_scores_each_expert_as_the_plain_path_does():
    """The study runs the probe's frozen layers once per target and reuses them for every expert; each entry
    must equal fine-tuning that expert alone and scoring it end to end with ``task_accuracy``."""
    probe = tiny_probe()
    sources = {"s0": tiny_task(60, 3, seed=1), "s1": tiny_task(60, 3, seed=2)}
    targets = {"t0": tiny_task(60, 3, seed=3), "t1": tiny_task(60, 3, seed=4)}
    embedder = Task2Vec(probe, **FAST)
    opts = dict(fine_tune_steps=15, from_layer=6, reinit=True, lr=3e-3)
    study = t2v.expert_study(probe, sources, targets, embedder, test_fraction=0.5, seed=0, **opts)
    assert study.experts == ["s0", "s1"] and study.targets == ["t0", "t1"]
    for i, source in enumerate(sources.values()):
        expert = t2v.fine_tune(probe, source, from_layer=6, steps=15, reinit=True, lr=3e-3, seed=0)
        for j, target in enumerate(targets.values()):
            assert study.accuracy[i, j] == pytest.approx(t2v.task_accuracy(expert, target, test_fraction=0.5, seed=0),
                                                         abs=1e-6)
    generic = [t2v.task_accuracy(probe, t, test_fraction=0.5, seed=0) for t in targets.values()]
    assert np.allclose(study.generic_accuracy, generic)
    assert np.allclose(study.d_sym, t2v.cross_distance_matrix(study.source_embeddings, study.target_embeddings))
    assert np.allclose(study.complexity, [t2v.complexity(e) for e in study.source_embeddings])
    assert np.allclose(study.scores(0.15), study.d_sym - 0.15 * study.complexity[:, None])


def test_embeddings_from_different_estimators_are_not_mixed():
    a = random_embeddings(2, estimator="montecarlo/batch")
    b = random_embeddings(2, estimator="montecarlo/per_sample")
    with pytest.raises(ParameterError, match="not comparable"):
        distance_matrix(a + b)
    distance_matrix(a + b, strict=False)


def test_asymmetric_distance_and_probe_selection():
    src = random_embeddings(4, seed=1)
    target = random_embeddings(1, seed=2)[0]
    t0 = t2v.trivial_embedding(src[0])
    assert np.array_equal(t0.hessian, src[0].scale)
    d = t2v.asymmetric_distance(src[0], target, alpha=0.15)
    assert d == pytest.approx(distance(src[0], target) - 0.15 * distance(src[0], t0))
    table = t2v.select_probe(target, {f"e{i}": e for i, e in enumerate(src)}, accuracy={f"e{i}": i / 4 for i in range(4)})
    assert list(table["rank"]) == [1, 2, 3, 4] and table["d_asym"].is_monotonic_increasing
    D = t2v.asymmetric_distance_matrix(src, [target], alpha=0.15)
    assert D[0, 0] == pytest.approx(d)
    acc = np.array([[0.9, 0.5], [0.6, 0.8], [0.1, 0.1]])
    summary = t2v.selection_summary(np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]), acc)
    assert summary.top1 == 1.0 and summary.mean_regret == 0.0 and summary.mean_spearman == pytest.approx(1.0)


def test_cluster_order_and_agreement():
    D = np.array([[0, 1, 9, 9], [1, 0, 9, 9], [9, 9, 0, 1], [9, 9, 1, 0]], float)
    order = list(t2v.cluster_order(D))
    assert {frozenset(order[:2]), frozenset(order[2:])} == {frozenset({0, 1}), frozenset({2, 3})}
    assert t2v.matrix_agreement(D, 2 * D + 1) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------------
# Known answers on real tasks, with the shipped probe
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def omniglot_tasks():
    from workbench.data import load_omniglot

    o = load_omniglot(28)
    latin = o.alphabet_task("Latin")
    drawer = np.tile(np.arange(20), latin.n_classes)
    bengali = o.alphabet_task("Bengali")
    b_classes = bengali.labels < 26  # 26 of Bengali's 46 characters: the same number of classes as Latin
    rng = np.random.default_rng(0)
    sub = rng.choice(len(latin.labels), size=len(latin.labels) // 4, replace=False)
    return {
        "latin A": (latin.images[drawer < 10], latin.labels[drawer < 10]),  # same classes ...
        "latin B": (latin.images[drawer >= 10], latin.labels[drawer >= 10]),  # ... other drawers
        "latin subsample": (latin.images[sub], latin.labels[sub]),
        "bengali": (bengali.images[b_classes], bengali.labels[b_classes]),  # disjoint classes, other script
    }


@pytest.fixture(scope="module")
def shipped_probe():
    return t2v.load_probe()


def test_known_answers_same_classes_and_subsample_are_closer_than_disjoint_classes(omniglot_tasks, shipped_probe):
    e = {k: Task2Vec(shipped_probe).embed(v, name=k) for k, v in omniglot_tasks.items()}
    d_same = distance(e["latin A"], e["latin B"])
    d_sub = distance(e["latin A"], e["latin subsample"])
    d_other = distance(e["latin A"], e["bengali"])
    assert d_same < d_other and d_sub < d_other
    assert distance(e["latin B"], e["latin subsample"]) < distance(e["latin B"], e["bengali"])


def test_per_sample_and_batch_estimators_rank_tasks_alike(omniglot_tasks, shipped_probe):
    from workbench.data import load_omniglot

    o = load_omniglot(28)
    tasks = dict(omniglot_tasks)
    for a in ("Japanese_(katakana)", "Braille"):
        t = o.alphabet_task(a)
        tasks[a] = (t.images, t.labels)
    opts = dict(skip_layers=6, samples_per_epoch=3200)  # 50 batches in the batch estimator, to keep the test short
    per_sample = [Task2Vec(shipped_probe, **opts).embed(v) for v in tasks.values()]
    batch = [Task2Vec(shipped_probe, fisher="batch", **opts).embed(v) for v in tasks.values()]
    assert t2v.matrix_agreement(distance_matrix(per_sample), distance_matrix(batch)) > 0.6
    # Both estimate the same Fisher: the batch estimate is about F / 64 (squared mean of 64 zero-mean gradients).
    ratio = np.median(per_sample[0].hessian / np.maximum(batch[0].hessian, 1e-30))
    assert 20 < ratio < 200


def test_train_probe_smoke_profile_writes_checkpoint_sidecar_and_log(tmp_path):
    from workbench.methods.registry import get_trainer

    path = get_trainer("task2vec-probe")(profile="smoke", seed=0, output_dir=tmp_path)
    assert path.exists() and path.with_suffix(".json").exists() and path.with_suffix(".log").exists()
    probe = t2v.load_probe(path)
    assert probe.meta["command"].startswith("workbench train task2vec-probe")
    assert 0 <= probe.meta["metrics"]["train_accuracy"] <= 1
