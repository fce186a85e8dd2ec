"""HyperTransformer: generated weight shapes, permutation invariance, episodes, learning, unlabeled samples,
checkpoints, and the ProtoNet / fine-tune baselines. One torch thread, well under a minute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data import load_omniglot, omniglot_split
from workbench.errors import DataError, ParameterError
from workbench.methods import hypertransformer as ht
from workbench.methods.hypertransformer import (FineTuneLogits, HyperTransformer, HyperTransformerConfig, ProtoNet,
                                                load_model, omniglot_samplers, save_model)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def omniglot():
    return load_omniglot(28)


@pytest.fixture(scope="module")
def five_way(omniglot):
    return omniglot_samplers(5, k_shot=1, omniglot=omniglot)


@pytest.fixture(scope="module")
def semi(omniglot):
    return omniglot_samplers(5, k_shot=1, n_unlabeled=2, omniglot=omniglot)


@pytest.fixture(scope="module")
def protonet(five_way):
    return ProtoNet(n_way=5, steps=150, log_every=50).fit(five_way["train"], show_progress=False)


@pytest.mark.parametrize("generate, names", [("logits", ["logits"]),
                                              ("all", ["conv0", "conv1", "conv2", "conv3", "logits"])])
def test_generated_weight_shapes(five_way, generate, names):
    model = HyperTransformer(n_way=5, channels=6, generate=generate).eval()
    w = model.generate(five_way["train"].episode(0))
    assert list(model.generators) == names and w.generated == tuple(names)
    assert [tuple(c.shape) for c in w.conv] == [(6, 1, 3, 3)] + [(6, 6, 3, 3)] * 3
    assert w.logits_weight.shape == (5, 6) and w.logits_bias.shape == (5,)  # 28 -> 14 -> 7 -> 3 -> 1: 6 features
    # learned conv layers are the model's own parameters, generated ones are not
    own = {id(p) for p in model.parameters()}
    assert all((id(c) in own) == (generate == "logits") for c in w.conv)
    # output allocation: one token per output channel / per class, slice = 3*3*C_in or features + 1
    slices = {n: (g.n_tokens, g.slice_size) for n, g in model.generators.items()}
    assert slices["logits"] == (5, 7)
    if generate == "all":
        assert slices["conv0"] == (6, 9) and slices["conv3"] == (6, 54)
    logits = model.classify(w, five_way["train"].episode(0).query_x)
    assert logits.shape == (15, 5) and torch.isfinite(logits).all()


@pytest.mark.parametrize("generate", ["logits", "all"])
def test_generator_is_permutation_invariant_in_the_support_set(semi, generate):
    model = HyperTransformer(n_way=5, channels=4, generate=generate).eval()
    episode = semi["train"].episode(3)
    perm = torch.randperm(len(episode.support_y), generator=torch.Generator().manual_seed(0))
    uperm = torch.randperm(len(episode.unlabeled_y), generator=torch.Generator().manual_seed(1))
    shuffled = type(episode)(**{**episode.__dict__, "support_x": episode.support_x[perm],
                                "support_y": episode.support_y[perm], "unlabeled_x": episode.unlabeled_x[uperm]})
    with torch.no_grad():
        a, b = model.generate(episode), model.generate(shuffled)
    for x, y in zip(a.conv + [a.logits_weight, a.logits_bias], b.conv + [b.logits_weight, b.logits_bias]):
        assert torch.allclose(x, y, atol=1e-5)


def test_episodes_follow_the_protocol(omniglot):
    split = omniglot_split("ht")
    assert len(set(split["train"]) & set(split["test"])) == 0 and len(split["test"]) == 423
    samplers = omniglot_samplers(20, k_shot=1, omniglot=omniglot)
    train = samplers["train"]
    for index in range(3):
        ep = train.episode(index)
        assert len(set(ep.classes.tolist())) == 20 and set(ep.classes.tolist()) <= set(split["train"].tolist())
        for part_x, part_y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
            for x, y in zip(part_x, part_y):
                # every image is an image of its episode class, turned by that class's rotation
                c, k = int(ep.classes[y]), int(ep.rotations[y])
                originals = torch.from_numpy(omniglot.images[omniglot.labels == c])
                turned = torch.rot90(originals, k, dims=(-2, -1))
                assert (turned - x[0]).abs().flatten(1).max(1).values.min() == 0
    # seeded random access: another sampler with the same seed draws the same episode, another seed another one
    again = omniglot_samplers(20, k_shot=1, omniglot=omniglot)["train"]
    assert torch.equal(again.episode(1).support_x, train.episode(1).support_x)
    other = omniglot_samplers(20, k_shot=1, seed=1, omniglot=omniglot)["train"]
    assert other.episode(1).classes.tolist() != train.episode(1).classes.tolist()
    test = samplers["test"].episode(0)
    assert set(test.classes.tolist()) <= set(split["test"].tolist()) and (test.rotations == 0).all()


def test_short_training_beats_chance_by_far(five_way):
    model = HyperTransformer(n_way=5, steps=300, log_every=100).fit(five_way["train"], show_progress=False)
    assert len(model.history_) == 3 and model.history_.last()["step"] == 300
    acc = model.evaluate(five_way["test"], 100).accuracy
    assert acc.mean > 0.45, f"5-way 1-shot test accuracy {acc} (chance 20%)"  # measured ~0.65
    assert 0 < acc.ci95 < 0.1


def test_unlabeled_token_path(semi):
    model = HyperTransformer(n_way=5, steps=4, log_every=2).fit(semi["train"], show_progress=False)
    episode = semi["test"].episode(0)
    assert len(episode.unlabeled_x) == 10
    with torch.no_grad():
        with_u = model.generate(episode, need_attention=True)
        without = model.generate(episode, unlabeled=False)
        all_masked = model.generate(episode, mask_p=1.0, gen=torch.Generator().manual_seed(0))
    assert not torch.allclose(with_u.logits_weight, without.logits_weight)
    assert torch.allclose(all_masked.logits_weight, without.logits_weight, atol=1e-6)
    attn = with_u.attention["logits"]
    assert len(attn) == 3 and attn[0].shape == (5 + 5 + 10, 5 + 5 + 10)  # placeholders + support + unlabeled
    assert model.evaluate(semi["test"], 3).accuracies.shape == (3,)


def test_checkpoint_round_trip_and_mismatch(tmp_path, five_way):
    model = HyperTransformer(n_way=5, channels=4, steps=2).fit(five_way["train"], show_progress=False)
    path = save_model(model, tmp_path / "ht.pt", {"command": "test"})
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"state_dict", "meta"}
    loaded = load_model(path)
    episode = five_way["test"].episode(0)
    with torch.no_grad():
        assert torch.allclose(model.episode_logits(episode), loaded.episode_logits(episode), atol=1e-6)
    assert loaded.meta["command"] == "test" and loaded.config.channels == 4
    public = ht.load_hypertransformer(path)  # the documented loader: the same model, in eval mode
    assert isinstance(public, HyperTransformer) and not public.training
    with torch.no_grad():
        assert torch.allclose(model.episode_logits(episode), public.episode_logits(episode), atol=1e-6)
    with pytest.raises(DataError, match="does not fit HyperTransformer.*shape mismatches"):
        load_model(path, config=HyperTransformerConfig(n_way=5, channels=8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="sha256"):
        load_model(path)


def test_shipped_checkpoint_loads():
    from workbench.paths import checkpoints_dir

    path = checkpoints_dir() / "hypertransformer.pt"
    if not path.exists():
        pytest.skip("no shipped checkpoint yet (workbench train hypertransformer)")
    model = load_model(path)
    assert isinstance(model, HyperTransformer) and model.config.channels == 8
    assert path.stat().st_size < 5_000_000
    proto = ht.load_protonet()
    assert isinstance(proto, ProtoNet) and proto.config.channels == 8


@pytest.mark.slow
@pytest.mark.parametrize("shots", [1, 5])
def test_the_shipped_checkpoints_recorded_accuracy_is_what_it_measures(shots):
    """Re-score the shipped checkpoint on 200 *independent* 20-way test episodes (another sampler seed than the
    recorded run's) and compare with the accuracy its card records: the two means must agree within 1.5x the 95%
    interval of their difference (about 3 standard errors), so a stale card or a changed evaluation fails."""
    from workbench.paths import checkpoints_dir

    path = checkpoints_dir() / "hypertransformer.pt"
    if not path.exists():
        pytest.skip("no shipped checkpoint yet (workbench train hypertransformer)")
    model = load_model(path)
    recorded = model.meta["metrics"][f"test_{shots}shot"]
    episodes = ht.omniglot_samplers(model.config.n_way, k_shot=shots, seed=model.meta["seed"] + 1)["test"]
    measured = model.evaluate(episodes, 200).accuracy
    tolerance = 1.5 * float(np.hypot(recorded["ci95"], measured.ci95))
    print(f"\n{shots}-shot: recorded {recorded['mean']:.4f} ± {recorded['ci95']:.4f}, measured now {measured}")
    assert abs(measured.mean - recorded["mean"]) < tolerance


def test_protonet_and_finetune_beat_chance(five_way, protonet):
    acc = protonet.evaluate(five_way["test"], 60).accuracy.mean
    assert acc > 0.5, acc  # chance 0.2
    fine = FineTuneLogits(protonet, steps=50).evaluate(five_way["test"], 30).accuracy.mean
    assert fine > 0.4, fine


def test_user_mistakes_are_parameter_errors(five_way):
    with pytest.raises(ParameterError, match="generate"):
        HyperTransformerConfig(generate="conv")
    with pytest.raises(ParameterError, match="bn_mode"):
        HyperTransformerConfig(bn_mode="running")
    with pytest.raises(ParameterError, match="channels"):
        HyperTransformer(channels=0)
    with pytest.raises(ParameterError, match="n_way"):
        HyperTransformer(n_way=3).generate(five_way["train"].episode(0))
    with pytest.raises(ParameterError, match="profile"):
        ht.train_checkpoint(profile="huge")


def test_default_batch_bn_mode_normalises_each_query_batch_by_its_own_statistics(five_way):
    """The official (default) BN: the query batch is normalised with its *own* statistics. So a query batch at
    3x the contrast gets the same logits (conv then BN removes a positive per-batch scale), and a query's logits
    depend on the other queries beside it (transductive). ``"support"`` mode has neither property."""
    batch = HyperTransformer(n_way=5, channels=4, seed=1).eval()
    assert batch.config.bn_mode == "batch"
    episode = five_way["test"].episode(0)
    q = episode.query_x
    with torch.no_grad():
        w = batch.generate(episode)
        full = batch.classify(w, q)
        assert torch.allclose(batch.classify(w, 3 * q), full, atol=1e-3 * float(full.abs().max()))
        assert not torch.allclose(batch.classify(w, q[:2])[:1], full[:1], atol=1e-3 * float(full.abs().max()))
        support = HyperTransformer(n_way=5, channels=4, seed=1, bn_mode="support").eval()
        ws = support.generate(episode)
        plain = support.classify(ws, q)
        assert not torch.allclose(support.classify(ws, 3 * q), plain, atol=1e-3 * float(plain.abs().max()))


def test_support_bn_mode_is_not_transductive(five_way):
    model = HyperTransformer(n_way=5, channels=4, bn_mode="support").eval()
    episode = five_way["test"].episode(0)
    with torch.no_grad():
        w = model.generate(episode)
        full = model.classify(w, episode.query_x)
        alone = model.classify(w, episode.query_x[:1])
    assert torch.allclose(full[:1], alone, atol=1e-5)  # a query's logits do not depend on the other queries
    assert np.isfinite(full.numpy()).all()


# --------------------------------------------------------------------------------------------- long runs
def _resume_config(**overrides) -> HyperTransformerConfig:
    return HyperTransformerConfig(**{**dict(n_way=5, channels=4, steps=12, log_every=4, episodes_per_step=2,
                                            unlabeled_mask_end=0.3, seed=3), **overrides})


def test_resume_gives_the_same_model_as_an_uninterrupted_run(omniglot, tmp_path):
    """Stopped after 5 of 12 steps (state saved) and resumed, the run is *bitwise* the uninterrupted one: weights,
    optimiser moments, the sampler's position, both random generators (the unlabeled masks) and the history."""
    def samplers():
        return omniglot_samplers(5, k_shot=1, n_unlabeled=2, omniglot=omniglot)

    s = samplers()
    straight = HyperTransformer(_resume_config()).fit(s["train"], val=s["val"], val_episodes=3, show_progress=False)
    state = tmp_path / "run.state.pt"
    s = samplers()
    first = HyperTransformer(_resume_config()).fit(s["train"], val=s["val"], val_episodes=3, show_progress=False,
                                                   state_path=state, stop_after=5)
    assert first.step_ == 5 and state.is_file()
    assert set(torch.load(state, weights_only=True)) >= {"model", "optimizer", "sampler_next", "rng_generator"}
    s = samplers()
    resumed = HyperTransformer(_resume_config()).fit(s["train"], val=s["val"], val_episodes=3, show_progress=False,
                                                     state_path=state, resume=True)
    assert resumed.step_ == 12
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    drop = {"seconds"}  # wall time is the only thing that may differ
    assert [{k: v for k, v in r.items() if k not in drop} for r in straight.history_.records] == \
           [{k: v for k, v in r.items() if k not in drop} for r in resumed.history_.records]


def test_a_state_from_another_config_is_refused(omniglot, tmp_path):
    s = omniglot_samplers(5, k_shot=1, omniglot=omniglot)
    state = tmp_path / "run.state.pt"
    HyperTransformer(_resume_config()).fit(s["train"], show_progress=False, state_path=state, stop_after=2)
    with pytest.raises(ParameterError, match=r"another configuration \(channels: saved 4 vs now 6"):
        HyperTransformer(_resume_config(channels=6)).fit(s["train"], show_progress=False, state_path=state,
                                                         resume=True)
    with pytest.raises(ParameterError, match="belongs to a HyperTransformer, not a ProtoNet"):
        ProtoNet(_resume_config()).fit(s["train"], show_progress=False, state_path=state, resume=True)
    with pytest.raises(ParameterError, match="no training state to resume"):
        HyperTransformer(_resume_config()).fit(s["train"], show_progress=False, state_path=tmp_path / "none.pt",
                                               resume=True)
    with pytest.raises(ParameterError, match="EpisodeSampler"):
        HyperTransformer(_resume_config()).fit([s["train"].episode(0)], state_path=state, resume=True)


def test_a_stop_signal_saves_the_state_and_resume_finishes(omniglot, tmp_path):
    """SIGTERM (or Ctrl-C) during training: the step in progress finishes, the state is saved, and
    TrainingInterrupted (a KeyboardInterrupt) says how to resume."""
    import os
    import signal

    from workbench.train import TrainingInterrupted

    s = omniglot_samplers(5, k_shot=1, omniglot=omniglot)
    state = tmp_path / "run.state.pt"
    sent = []

    def log(line: str) -> None:  # called at step 4 (log_every): deliver the signal to ourselves
        if not sent and line.startswith("step 4 "):
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="resume with the same command and --resume"):
        HyperTransformer(_resume_config()).fit(s["train"], show_progress=False, state_path=state, log=log)
    assert torch.load(state, weights_only=True)["step"] == 4
    s = omniglot_samplers(5, k_shot=1, omniglot=omniglot)
    done = HyperTransformer(_resume_config()).fit(s["train"], show_progress=False, state_path=state, resume=True)
    assert done.step_ == 12
