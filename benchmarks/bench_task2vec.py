"""Task2Vec against the released code: CPU time per task, agreement across seeds and with the released embeddings,
and the evidence for the default BatchNorm mode.

    python benchmarks/bench_task2vec.py                   # both parts, writes results/task2vec.{json,md} (~2 h)
    python benchmarks/bench_task2vec.py --part speed      # the estimator table only (12 alphabets x 2 seeds)
    python benchmarks/bench_task2vec.py --part default    # the default study only (50 alphabets + 10 derived tasks)
    python benchmarks/bench_task2vec.py --quick           # 4 alphabets / a 16-task study, prints only (--save writes)
    python benchmarks/bench_task2vec.py --part speed --estimators released "official, fast" "workbench default" \
        --progress /tmp/t2v_progress.jsonl              # the saved run: 3 rows, resumable (~1 h on a busy 2-core box)

**Speed and agreement** (``--part speed``). All rows use the shipped Omniglot probe, the same 12 alphabet tasks,
``skip_layers=0``, ``max_samples=10000`` and one torch thread, in one process where the estimators take turns task by
task (the order rotating), so that changes of load on this shared machine reach them all alike:

* ``released`` — the released code itself (``../shared/reference/aws-cv-task2vec/task2vec.py``, unmodified, imported
  from that folder), run the way its README says: the probe deep-copied with a fresh ``nn.Linear`` head per task,
  ``torch``/``numpy``/``random`` seeded before each task, ``Task2Vec(model, skip_layers=0, max_samples=10000)
  .embed(TensorDataset(prepared images, labels))``. Two run-time settings only, through its own API: DataLoader
  worker processes off (``loader_opts={"num_workers": 0}``; its ``_cache_features`` ignores ``loader_opts`` when
  ``skip_layers=0``, so a subclass passes them on — worker processes would hide CPU time from this process) and
  progress bars off. Without the folder the row is skipped and said so, and nothing is compared with it.
* ``workbench default`` — ``Task2Vec(probe)``: per-sample Fisher, BatchNorm in eval mode.
* ``official`` / ``official, fast`` — ``Task2Vec.official(probe, engine="loop" | "fast")``.
* ``batch, BN eval`` / ``batch, BN train`` — ``Task2Vec(probe, fisher="batch", bn_mode=...)``: the batch estimator
  with the workbench's fixes (stratified truncation, its own random draws).
* ``batch, BN train, dataset order`` — an ablation: ``batch, BN train`` with its features cached in dataset order
  (class-sorted batches, as the released code caches them) instead of a seeded shuffle; nothing else changed.
* ``per_sample, sampled labels`` — the default with one label per image drawn from the model.
* ``variational`` (only with ``--estimators``: 25 s per task) — ``Task2Vec(probe, method="variational")``.

Reported: CPU seconds per task (``time.process_time``; the machine is shared, so wall time says little), the
Spearman correlation between the distance matrices of seeds 0 and 1, and, per
seed, the Spearman correlation with the released code's matrix of the same seed (mean over seeds) and the relative
L2 difference of the embeddings themselves. Plus where the time goes: the floating-point work of one Fisher batch
and this machine's single-thread matrix-product speed, which bound any exact implementation of the released
estimator from below.

**Default study** (``--part default``). Which BatchNorm mode recovers known structure better, on the 50 Omniglot
alphabets and 10 derived tasks (``task2vec.derived_tasks``), over seeds: the default ``Task2Vec(probe)`` (BatchNorm
in eval mode) against ``Task2Vec.official(probe)`` (train mode, the released behaviour). ``--study-configs`` adds
``Task2Vec.official(probe, bn_mode="eval")``, which differs from the released configuration in BatchNorm only
(left out by default to halve the run time). Scores, all fixed before any run: the probability that a same-script-
family pair of alphabets is closer than a cross-family pair (``grouping_auc``); how often an alphabet's nearest
alphabet is of its family; the rank of the parent task among all tasks seen from its subsample (Latin/Bengali
with half the characters or 5 drawers, digits 0-4 → digits 0-9; 1 = nearest); the Spearman correlation between the
embedding norm and the error of a linear head on the probe's features (the paper: the norm tracks difficulty); expert
selection as in the notebook (8 experts re-trained on source tasks, 10 targets, held-out accuracy of every pair;
Spearman between ``-d_asym`` and accuracy at the paper's alpha = 0.15, top-1, regret); and the seed-to-seed
agreement. The mode that is better on more of the five scores (family AUC, parent rank, norm-vs-error, expert
Spearman, seed agreement) is the evidence for the default (and, when it runs, the same vote between the two
``official`` configurations).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, save_results  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "aws-cv-task2vec"
#: 12 alphabets from several script families, background and evaluation sets.
ALPHABETS = ["Latin", "Greek", "Cyrillic", "Bengali", "Gujarati", "Malayalam", "Kannada", "Japanese_(hiragana)",
             "Japanese_(katakana)", "Syriac_(Estrangelo)", "Syriac_(Serto)", "Braille"]
QUICK = ["Latin", "Greek", "Bengali", "Kannada"]
#: name -> Task2Vec keyword arguments ("official" rows go through Task2Vec.official).
ESTIMATORS: dict[str, dict[str, Any]] = {
    "released": {},
    "workbench default": {},
    "official": {"official": True, "engine": "loop"},
    "official, fast": {"official": True, "engine": "fast"},
    "batch, BN eval": {"fisher": "batch"},
    "batch, BN train": {"fisher": "batch", "bn_mode": "train"},
    "batch, BN train, dataset order": {"fisher": "batch", "bn_mode": "train", "dataset_order": True},
    "per_sample, sampled labels": {"fisher_labels": "sampled"},
    "variational": {"method": "variational"},
}
DEFAULT_ESTIMATORS = [k for k in ESTIMATORS if k != "variational"]
QUICK_ESTIMATORS = ["released", "workbench default", "official", "official, fast"]
#: The default study's configurations (name -> how to build the embedder from the probe and a seed).
EVAL, TRAIN, OFFICIAL_EVAL = ("workbench default (per_sample, BN eval)", "official, BN train (released)",
                              "official, BN eval")
STUDY = {
    EVAL: lambda probe, seed: _t2v().Task2Vec(probe, seed=seed),
    TRAIN: lambda probe, seed: _t2v().Task2Vec.official(probe, seed=seed),
    OFFICIAL_EVAL: lambda probe, seed: _t2v().Task2Vec.official(probe, bn_mode="eval", seed=seed),
}
DEFAULT_STUDY = [EVAL, TRAIN]
#: (subsample task, its parent) pairs of the derived tasks.
PARENTS = [("Latin (half the characters)", "Latin"), ("Latin (5 drawers)", "Latin"),
           ("Bengali (half the characters)", "Bengali"), ("Bengali (5 drawers)", "Bengali"),
           ("digits 0-4", "digits 0-9")]
#: Expert selection as in the notebook's default profile.
EXPERT_SOURCES = ["Kannada", "Syriac_(Serto)", "Tengwar", "Old_Church_Slavonic_(Cyrillic)", "Mongolian"]
EXPERT_DERIVED_SOURCES = ["digits 0-9", "Latin vs Greek", "Greek: 2 characters"]
EXPERT_OTHER_TARGETS = ["Malayalam", "Oriya", "Glagolitic", "Atlantean", "Gurmukhi"]
ALPHA = 0.15  # the paper's


def _t2v():
    from workbench.methods import task2vec

    return task2vec


# -------------------------------------------------------------------------------------------------------------
# The released code, side by side
# -------------------------------------------------------------------------------------------------------------


def released_available(folder: Path = REFERENCE) -> bool:
    return (folder / "task2vec.py").is_file() and (folder / "utils.py").is_file()


@functools.lru_cache(maxsize=None)
def load_released(folder: Path = REFERENCE):
    """The released ``task2vec`` module, imported unmodified from ``folder``.

    It imports its siblings by the top-level names ``variational`` and ``utils``; those names are imported from
    ``folder`` and removed from ``sys.modules`` again afterwards, so they cannot shadow or be shadowed by other
    modules of the same name.
    """
    if not released_available(folder):
        raise FileNotFoundError(f"the released Task2Vec code is not at {folder}")
    names = ("task2vec", "variational", "utils")
    saved = {k: sys.modules.pop(k) for k in names if k in sys.modules}
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("task2vec")
    finally:
        sys.path.remove(str(folder))
        for k in names:
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    module.tqdm = functools.partial(module.tqdm, disable=True)  # progress bars off (the same iterators underneath)
    return module


def released_embed(probe, images, labels, *, seed: int, skip_layers: int = 0, max_samples: int | None = 10_000,
                   num_samples: int = 10_000, head_epochs: int = 10, folder: Path = REFERENCE) -> np.ndarray:
    """The released ``Task2Vec(model, skip_layers, max_samples).embed(dataset)`` on a workbench probe; returns the
    hessian. As a new user would run it: seed everything, deep-copy the probe, give it a fresh ``nn.Linear`` head for
    the task's classes (what its ``get_model(num_classes=...)`` does), every parameter trainable, the images prepared
    by the probe (its ``forward`` does not normalise)."""
    import torch
    from torch.utils.data import TensorDataset

    module = load_released(folder)

    class Released(module.Task2Vec):
        # The released _cache_features starts 6 DataLoader workers unless given loader_opts, and embed() passes them
        # only when skip_layers > 0: pass them always (num_workers=0, in this process like everything else).
        def _cache_features(self, dataset, indexes=(-1,), max_samples=None, loader_opts=None):
            return super()._cache_features(dataset, indexes, max_samples, loader_opts=self.loader_opts)

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = copy.deepcopy(probe)
    model.fc = torch.nn.Linear(model.fc.in_features, int(labels.max()) + 1)
    for p in model.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        dataset = TensorDataset(model.prepare(images), labels)
    embedder = Released(model, skip_layers=skip_layers, max_samples=max_samples,
                        classifier_opts={"epochs": head_epochs},
                        loader_opts={"num_workers": 0, "num_samples": num_samples})
    return np.asarray(embedder.embed(dataset).hessian, dtype=np.float64)


# -------------------------------------------------------------------------------------------------------------
# One estimator in a fresh process
# -------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dataset_order_caching():
    """The ablation row: the workbench's batch estimator with one released behaviour put back, features cached in
    dataset order (class-sorted batches) instead of a seeded shuffle; for these tasks, smaller than max_samples,
    nothing is truncated either way."""
    import torch

    t2v = _t2v()
    saved = t2v.stratified_subset
    t2v.stratified_subset = lambda labels, n, generator: torch.arange(min(n, len(labels)))
    try:
        yield
    finally:
        t2v.stratified_subset = saved


def embed_one(name: str, probe, task, seed: int) -> np.ndarray:
    """The hessian of ``task`` by estimator ``name`` (a key of :data:`ESTIMATORS`)."""
    if name == "released":
        return released_embed(probe, task.images, task.labels, seed=seed)
    t2v = _t2v()
    kwargs = dict(ESTIMATORS[name])
    order = dataset_order_caching() if kwargs.pop("dataset_order", False) else contextlib.nullcontext()
    make = t2v.Task2Vec.official if kwargs.pop("official", False) else t2v.Task2Vec
    with order:
        return make(probe, seed=seed, **kwargs).embed(task).hessian


def run_interleaved(names: list[str], alphabets: list[str], seeds: list[int], progress: str | None = None) -> dict:
    """Embed every alphabet with every seed and every estimator, in one process, task by task: the estimators take
    turns (their order rotating from task to task), so that a change of load on this shared machine reaches all of
    them alike; both seeds of a task run before the next task, so a run cut short still has whole tasks.
    ``progress``: a JSON-lines file, one line per (task, seed, estimator); lines already there are reused (resume),
    so an interrupted run continues where it stopped. Returns each estimator's CPU seconds per task and hessians."""
    import torch

    torch.set_num_threads(1)
    from workbench.data import load_omniglot

    t2v = _t2v()
    omniglot = load_omniglot(28)
    probe = t2v.load_probe()
    tasks = [t2v.as_task(omniglot.alphabet_task(a), name=a) for a in alphabets]
    if "released" in names:
        load_released()  # import before timing
    done: dict[tuple, dict] = {}
    if progress and Path(progress).exists():
        for line in Path(progress).read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line still being written by another run
                continue
            done[(row["task"], row["seed"], row["estimator"])] = row
    out = {name: {"estimator": name, "cpu_s_all": [], "hessians": {str(s): [] for s in seeds}} for name in names}
    turn = 0
    for task in tasks:
        for seed in seeds:
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                row = done.get((task.name, seed, name))
                if row is None:
                    cpu = time.process_time()
                    h = embed_one(name, probe, task, seed)
                    row = {"task": task.name, "seed": seed, "estimator": name, "cpu_s": time.process_time() - cpu,
                           "load": os.getloadavg()[0], "hessian": np.asarray(h).tolist()}
                    if progress:
                        with open(progress, "a") as f:
                            f.write(json.dumps(row) + "\n")
                out[name]["cpu_s_all"].append(row["cpu_s"])
                out[name].setdefault("load_all", []).append(round(row["load"], 2))  # 1-min load average after it
                out[name]["hessians"][str(seed)].append(row["hessian"])
            turn += 1
            print(f"{task.name} seed {seed} done, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    for r in out.values():
        r["cpu_s_per_task"] = float(np.mean(r["cpu_s_all"]))
    return out


def time_floor(n_batches: int = 156) -> dict:
    """The floating-point work of one Fisher batch (64 images, forward + backward, BatchNorm in train mode) on the
    shipped probe, this machine's single-thread matrix-product speed, and the fast engine's measured time per batch:
    an exact implementation of the released estimator cannot beat ``n_batches x work / speed`` per task."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    t2v = _t2v()
    probe = t2v.load_probe()
    torch.manual_seed(0)
    head = torch.nn.Linear(probe.fc.in_features, 30)
    tail = t2v._Tail(probe.layers[:-1], head).train()
    weights = {k: tail.get_parameter(k) for _, k in t2v._fisher_entries(probe, tail)}
    x = torch.rand(64, 28, 28) * 2 - 1
    x = probe.prepare(x)
    y = torch.randint(0, 30, (64,))
    for w in weights.values():
        w.requires_grad_(True)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.autograd.grad(F.cross_entropy(tail(x), y), list(weights.values()))
    flops = counter.get_total_flops()
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(5):
        a @ b
    start, reps = time.process_time(), 200
    for _ in range(reps):
        a @ b
    gemm = 2 * 512 ** 3 * reps / (time.process_time() - start)

    def per_batch(model, ws, xb) -> float:
        params = list(ws.values())
        for _ in range(3):
            torch.autograd.grad(F.cross_entropy(model(xb), y), params)
        start = time.process_time()
        for _ in range(20):
            torch.autograd.grad(F.cross_entropy(model(xb), y), params)
        return (time.process_time() - start) / 20

    loop_s = per_batch(tail, weights, x)
    fast_tail, fast_weights, fast_x = t2v._channels_last_copy(tail, weights, x)
    for w in fast_weights.values():
        w.requires_grad_(True)
    fast_s = per_batch(fast_tail, fast_weights, fast_x)
    return {"gflop_per_batch": flops / 1e9, "gemm_gflops_single_thread": gemm / 1e9, "n_batches": n_batches,
            "floor_s_per_task": n_batches * flops / gemm, "loop_s_per_batch": loop_s, "fast_s_per_batch": fast_s,
            "loop_gflops": flops / loop_s / 1e9, "fast_gflops": flops / fast_s / 1e9}


# -------------------------------------------------------------------------------------------------------------
# The default study (one seed, every configuration, in one process)
# -------------------------------------------------------------------------------------------------------------


class CachedEmbedder:
    """Embeds by task name, computing each (task, configuration) once; ``expert_study`` calls ``embed_many``."""

    def __init__(self, embedder, cache: dict) -> None:
        self.embedder, self.cache = embedder, cache

    def embed_many(self, tasks, desc: str = "") -> list:
        for name, task in tasks.items():
            if name not in self.cache:
                self.cache[name] = self.embedder.embed(task, name=name)
        return [self.cache[name] for name in tasks]


def study_seed(seed: int, quick: bool = False, configs: list[str] | None = None) -> dict:
    """Every score of the default study for one seed and each configuration (names in :data:`STUDY`)."""
    import torch
    from scipy.stats import spearmanr

    torch.set_num_threads(1)
    from workbench.data import load_omniglot

    t2v = _t2v()
    omniglot = load_omniglot(28)
    probe = t2v.load_probe()
    alphabets = t2v.alphabet_tasks(omniglot)
    derived = t2v.derived_tasks(omniglot, seed=0)
    if quick:
        alphabets = {k: alphabets[k] for k in list(alphabets)[:12] + ["Latin", "Bengali"] if k in alphabets}
        derived = {k: derived[k] for k in ("Latin (half the characters)", "Bengali (5 drawers)", "digits 0-9",
                                           "digits 0-4")}
    tasks = {**alphabets, **derived}
    names = list(tasks)
    alpha_names = list(alphabets)
    family = {t2v.short_name(a): f for a, f in t2v.SCRIPT_FAMILY.items()}
    families = [family[a] for a in alpha_names]
    # Difficulty: error of a linear head on the probe's features (independent of the embedding).
    error = np.array([1 - t2v.task_accuracy(probe, alphabets[a], seed=0) for a in alpha_names])

    def half(alphabet: str, part: int):
        classes = np.flatnonzero(omniglot.characters["alphabet"].to_numpy() == alphabet)
        return omniglot.task(classes[part::2])

    src_alpha = EXPERT_SOURCES[:2] if quick else EXPERT_SOURCES
    sources = {t2v.short_name(a) + " (half)": half(a, 0) for a in src_alpha}
    sources.update({k: t2v.derived_tasks(omniglot, seed=0)[k] for k in EXPERT_DERIVED_SOURCES[: 1 if quick else 3]})
    targets = {t2v.short_name(a) + " (other half)": half(a, 1) for a in src_alpha}
    targets.update({t2v.short_name(a): omniglot.alphabet_task(a) for a in ([] if quick else EXPERT_OTHER_TARGETS)})
    steps = 30 if quick else 150

    out: dict[str, Any] = {"seed": seed, "tasks": names, "configs": {}}
    study_accuracy = None
    for config in configs or DEFAULT_STUDY:
        embedder = STUDY[config](probe, seed)
        cache: dict = {}
        start = time.process_time()
        embs = CachedEmbedder(embedder, cache).embed_many(tasks)
        D = t2v.distance_matrix(embs)
        idx = [names.index(a) for a in alpha_names]
        Da = D[np.ix_(idx, idx)]
        nearest = np.argsort(Da + np.diag(np.full(len(idx), np.inf)), axis=1)[:, 0]
        ranks = []
        for child, parent in PARENTS:
            if child in names and parent in names:
                i, j = names.index(child), names.index(parent)
                order = [k for k in np.argsort(D[i], kind="stable") if k != i]
                ranks.append(order.index(j) + 1)
        norms = np.array([embs[names.index(a)].norm() for a in alpha_names])
        # Expert selection: fine-tune and score the experts once per seed, embed with each configuration.
        study = t2v.expert_study(probe, sources, targets, CachedEmbedder(embedder, cache), fine_tune_steps=steps,
                                 seed=seed) if study_accuracy is None else None
        if study is not None:
            study_accuracy = (study.accuracy, study.generic_accuracy)
        src_e = CachedEmbedder(embedder, cache).embed_many({k: t2v.as_task(v, name=k) for k, v in sources.items()})
        tgt_e = CachedEmbedder(embedder, cache).embed_many({k: t2v.as_task(v, name=k) for k, v in targets.items()})
        d_sym = t2v.cross_distance_matrix(src_e, tgt_e)
        comp = np.array([t2v.complexity(e) for e in src_e])
        accuracy = study_accuracy[0]
        selections = {}
        for a in (0.0, ALPHA):
            s = t2v.selection_summary(d_sym - a * comp[:, None], accuracy)
            selections[f"alpha={a:g}"] = {"top1": s.top1, "mean_regret": s.mean_regret,
                                          "spearman": s.mean_spearman, "selected_accuracy": s.selected_accuracy}
        out["configs"][config] = {
            "family_auc": t2v.grouping_auc(Da, families),
            "nn_same_family": float(np.mean([families[i] == families[j] for i, j in enumerate(nearest)])),
            "parent_ranks": ranks, "parent_rank_mean": float(np.mean(ranks)) if ranks else float("nan"),
            "parent_nearest": float(np.mean(np.array(ranks) == 1)) if ranks else float("nan"),
            "norm_vs_error_spearman": float(spearmanr(norms, error)[0]),
            "expert_selection": selections,
            "cpu_s": time.process_time() - start,
            "hessians": [e.hessian.tolist() for e in embs],
        }
    out["expert_accuracy"] = study_accuracy[0].tolist()
    out["generic_accuracy"] = study_accuracy[1].tolist()
    out["chance_nn_same_family"] = float(np.mean([(families.count(f) - 1) / (len(families) - 1) for f in families]))
    return out


def in_subprocess(call: str) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); import bench_task2vec as b; "
            "print('RESULT' + json.dumps(b.%s))") % (str(Path(__file__).parent), call)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{call} failed:\n{out.stderr[-3000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


# -------------------------------------------------------------------------------------------------------------
# Agreement, the decision and the report
# -------------------------------------------------------------------------------------------------------------


def matrices(hessians: dict[str, list]) -> dict[int, np.ndarray]:
    t2v = _t2v()
    return {int(seed): t2v.distance_matrix([t2v.Embedding(np.array(h), np.ones(len(h)), {}) for h in hs])
            for seed, hs in hessians.items()}


def speed_part(alphabets: list[str], seeds: list[int], estimators: list[str], progress: str | None = None) -> dict:
    t2v = _t2v()
    have_released = released_available()
    if not have_released:
        print(f"the released code ({REFERENCE}) is absent: the 'released' row and every comparison with it are "
              "skipped", flush=True)
    names = [e for e in estimators if e != "released" or have_released]
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    results = in_subprocess(f"run_interleaved({names!r}, {alphabets!r}, {seeds!r}, progress={progress!r})")
    for name in names:
        print(f"{name:<32} {results[name]['cpu_s_per_task']:7.2f} s/task CPU", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    D = {name: matrices(r["hessians"]) for name, r in results.items()}
    pairs = list(itertools.combinations(sorted(seeds), 2))
    table = {}
    for name, r in results.items():
        row = {k: v for k, v in r.items() if k != "hessians"}
        row["seed_agreement"] = (float(np.mean([t2v.matrix_agreement(D[name][a], D[name][b]) for a, b in pairs]))
                                 if pairs else None)
        if "released" in results:
            row["vs_released_spearman"] = float(np.mean([t2v.matrix_agreement(D[name][s], D["released"][s])
                                                         for s in seeds]))
            row["vs_released_spearman_per_seed"] = {str(s): t2v.matrix_agreement(D[name][s], D["released"][s])
                                                    for s in seeds}
            # Only between embeddings of the same kind: the per-sample and variational ones have other scales.
            same_kind = name == "released" or ESTIMATORS[name].get("fisher") == "batch" or ESTIMATORS[name].get("official")
            l2 = [np.linalg.norm(np.array(h) - np.array(g)) / np.linalg.norm(np.array(g))
                  for s in seeds for h, g in zip(r["hessians"][str(s)], results["released"]["hessians"][str(s)])
                  if same_kind]
            row["vs_released_rel_l2_median"] = float(np.median(l2)) if l2 else None
            row["vs_released_rel_l2_max"] = float(np.max(l2)) if l2 else None
            row["speedup_vs_released_cpu"] = results["released"]["cpu_s_per_task"] / r["cpu_s_per_task"]
        table[name] = row
    if "official" in results and "official, fast" in results:
        l2 = [np.linalg.norm(np.array(h) - np.array(g)) / np.linalg.norm(np.array(g)) for s in seeds
              for h, g in zip(results["official, fast"]["hessians"][str(s)], results["official"]["hessians"][str(s)])]
        table["official, fast"]["vs_official_loop_rel_l2"] = {"median": float(np.median(l2)), "max": float(np.max(l2))}
    cross = {f"{a} | {b}": t2v.matrix_agreement(D[a][seeds[0]], D[b][seeds[0]])
             for a, b in itertools.combinations(results, 2)}
    return {"tasks": alphabets, "seeds": seeds, "released_available": have_released,
            "load_average_before_after": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
            "reference": str(REFERENCE) if have_released else None,
            "settings": {"skip_layers": 0, "max_samples": 10000, "torch_threads": 1},
            "estimators": table, "cross_agreement_seed0": cross, "time_floor": in_subprocess("time_floor()"),
            "structure": structure_part(results, alphabets)}


def alphabet_errors(alphabets: list[str]) -> list[float]:
    """Each alphabet's difficulty for the probe: the held-out error of a linear head on its features."""
    import torch

    torch.set_num_threads(1)
    from workbench.data import load_omniglot

    t2v = _t2v()
    omniglot, probe = load_omniglot(28), t2v.load_probe()
    return [1 - t2v.task_accuracy(probe, omniglot.alphabet_task(a), seed=0) for a in alphabets]


def structure_scores(hessians: dict[str, list], alphabets: list[str], error: list[float]) -> dict[str, Any]:
    """Known-structure scores of one estimator's embeddings of ``alphabets`` (one list of hessians per seed), means
    over seeds: family AUC (a same-script-family pair closer than a cross-family pair), how often an alphabet's
    nearest alphabet is of its family, Spearman(embedding norm, error), and the seed-to-seed agreement."""
    from scipy.stats import spearmanr

    t2v = _t2v()
    family = {t2v.short_name(a): f for a, f in t2v.SCRIPT_FAMILY.items()}
    families = [family[t2v.short_name(a)] for a in alphabets]
    D = matrices(hessians)
    rows = []
    for seed, Dm in D.items():
        nearest = np.argsort(Dm + np.diag(np.full(len(Dm), np.inf)), axis=1)[:, 0]
        norms = [float(np.linalg.norm(h)) for h in hessians[str(seed)]]
        rows.append({"family_auc": t2v.grouping_auc(Dm, families),
                     "nn_same_family": float(np.mean([families[i] == families[j] for i, j in enumerate(nearest)])),
                     "norm_vs_error_spearman": float(spearmanr(norms, error)[0])})
    pairs = list(itertools.combinations(sorted(D), 2))
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["per_seed"] = {k: [r[k] for r in rows] for k in rows[0]}
    out["seed_agreement"] = (float(np.mean([t2v.matrix_agreement(D[a], D[b]) for a, b in pairs])) if pairs else None)
    out["parent_rank_mean"] = None  # needs the derived tasks: --part default
    out["expert_spearman"] = None  # needs fine-tuned experts: --part default
    return out


def structure_part(results: dict, alphabets: list[str]) -> dict[str, Any]:
    """The default-selection evidence that the speed part's own embeddings give (no extra embedding): BatchNorm in
    eval mode (``workbench default``) against train mode (``released`` and the faithful ``official`` rows)."""
    error = in_subprocess(f"alphabet_errors({alphabets!r})")
    scores = {name: structure_scores(r["hessians"], alphabets, error) for name, r in results.items()}
    train_rows = [n for n in ("released", "official, fast", "official") if n in scores]
    out: dict[str, Any] = {"tasks": alphabets, "error": error, "scores": scores, "votes": {}}
    if "workbench default" in scores:
        for name in train_rows:
            raw = vote(scores["workbench default"], scores[name])
            votes = {k: {"first": "eval", "second": "train", "tie": "tie"}[v] for k, v in raw.items()
                     if scores[name][k] is not None}
            # The four scores this part measures (parent rank and expert selection need --part default).
            n_eval, n_train = (sum(v == w for v in votes.values()) for w in ("eval", "train"))
            votes["majority"] = "eval" if n_eval > n_train else ("train" if n_train > n_eval else "tie")
            out["votes"][f"workbench default (BN eval) vs {name} (BN train)"] = votes
    return out


def vote(first: dict, second: dict) -> dict[str, str]:
    """Which of two configurations is better on each of the five scores ("first", "second" or "tie")."""
    signs = {"family_auc": 1, "parent_rank_mean": -1, "norm_vs_error_spearman": 1, "expert_spearman": 1,
             "seed_agreement": 1}
    votes = {}
    for key, sign in signs.items():
        if first[key] is None or second[key] is None or first[key] == second[key]:
            votes[key] = "tie"
        else:
            votes[key] = "first" if sign * (first[key] - second[key]) > 0 else "second"
    return votes


def majority(votes: dict[str, str], first: str, second: str) -> str:
    n1, n2 = sum(v == "first" for v in votes.values()), sum(v == "second" for v in votes.values())
    return first if n1 > n2 else (second if n2 > n1 else "tie")


def default_part(seeds: list[int], quick: bool, configs: list[str]) -> dict:
    t2v = _t2v()
    per_seed = []
    for seed in seeds:
        t0 = time.perf_counter()
        per_seed.append(in_subprocess(f"study_seed({seed}, quick={quick}, configs={configs!r})"))
        print(f"default study, seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for c in configs:
        rows = [s["configs"][c] for s in per_seed]
        mats = {str(s["seed"]): rows[i]["hessians"] for i, s in enumerate(per_seed)}
        D = matrices(mats)
        pairs = list(itertools.combinations(sorted(D), 2))
        mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
        summary[c] = {
            "family_auc": mean("family_auc"), "nn_same_family": mean("nn_same_family"),
            "parent_rank_mean": mean("parent_rank_mean"), "parent_nearest": mean("parent_nearest"),
            "norm_vs_error_spearman": mean("norm_vs_error_spearman"),
            "expert_spearman": float(np.mean([r["expert_selection"][f"alpha={ALPHA:g}"]["spearman"] for r in rows])),
            "expert_top1": float(np.mean([r["expert_selection"][f"alpha={ALPHA:g}"]["top1"] for r in rows])),
            "expert_regret": float(np.mean([r["expert_selection"][f"alpha={ALPHA:g}"]["mean_regret"] for r in rows])),
            "seed_agreement": (float(np.mean([t2v.matrix_agreement(D[a], D[b]) for a, b in pairs]))
                               if pairs else None),
            "per_seed": {k: [r[k] for r in rows] for k in ("family_auc", "parent_rank_mean",
                                                          "norm_vs_error_spearman")},
        }
    # The decision, by the rule stated in the module docstring (higher is better except the parent rank).
    votes = {k: {"first": "eval", "second": "train", "tie": "tie"}[v]
             for k, v in vote(summary[EVAL], summary[TRAIN]).items()}
    decision = majority(vote(summary[EVAL], summary[TRAIN]), "eval", "train")
    official_votes = None
    if OFFICIAL_EVAL in summary:
        raw = vote(summary[OFFICIAL_EVAL], summary[TRAIN])
        official_votes = {k: {"first": "eval", "second": "train", "tie": "tie"}[v] for k, v in raw.items()}
        official_votes["majority"] = majority(raw, "eval", "train")
    for s in per_seed:
        for c in configs:
            s["configs"][c].pop("hessians")
    return {"seeds": seeds, "n_tasks": len(per_seed[0]["tasks"]), "tasks": per_seed[0]["tasks"],
            "configs": configs, "summary": summary, "votes": votes, "decision": decision,
            "votes_official_eval_vs_train": official_votes, "per_seed": per_seed,
            "chance_nn_same_family": per_seed[0]["chance_nn_same_family"]}


def fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    info = report["machine"]
    lines = ["# Task2Vec benchmark", "",
             f"Run {info['date_utc']} on {info['cpu']} ({info['cpu_count']} cores, torch {info['versions']['torch']}, "
             "one torch thread per process). Load average at start / end of the run: "
             f"{info['load_average_at_start'][0]:.1f} / {report.get('load_average_at_end_of_run', [float('nan')])[0]:.1f}"
             " (the machine is shared: CPU seconds are the comparable figure, and they too grow under load).", ""]
    sp = report.get("speed")
    if sp:
        released = sp["released_available"]
        loads = [x for r in sp["estimators"].values() for x in r.get("load_all", [])]
        lines += [f"## Speed and agreement with the released code", "",
                  f"{len(sp['tasks'])} Omniglot alphabet tasks ({', '.join(sp['tasks'])}), seeds {sp['seeds']}, shipped "
                  "probe, skip_layers=0, max_samples=10000, one thread. All rows ran in one process, task by task, "
                  "taking turns (the order rotating), so that the shared machine's load reached them alike (load "
                  f"average {sp['load_average_before_after'][0]:.1f} before, {sp['load_average_before_after'][1]:.1f} "
                  "after). "
                  + (f"`released` is the unmodified released code from `{Path(sp['reference']).name}`."
                     if released else "**The released code was absent: no row compares with it.**")
                  + (f" 1-minute load average right after each embedding: {min(loads):.1f} to {max(loads):.1f} "
                     f"(mean {np.mean(loads):.1f}) on {info['cpus_usable']} cores." if loads else "")
                  + (f" Only {len(sp['tasks'])} of the {len(ALPHABETS)} benchmark alphabets: the run was cut short "
                     "for time (embeddings kept in a resumable `--progress` file)." if len(sp["tasks"]) < len(ALPHABETS)
                     else ""), "",
                  "| implementation | CPU s/task | speed-up vs released | seed 0 vs 1 (Spearman) | "
                  "vs released, same seed (Spearman) | embedding vs released (rel. L2, median / max) |",
                  "|---|---|---|---|---|---|"]
        for name, r in sp["estimators"].items():
            l2 = (f"{fmt(r.get('vs_released_rel_l2_median'), '.1e')} / {fmt(r.get('vs_released_rel_l2_max'), '.1e')}"
                  if r.get("vs_released_rel_l2_median") is not None else "-")
            speedup = r.get("speedup_vs_released_cpu")
            lines.append(f"| {name} | {r['cpu_s_per_task']:.2f} | {'-' if speedup is None else f'{speedup:.2f}x'} | "
                         f"{fmt(r['seed_agreement'])} | {fmt(r.get('vs_released_spearman'))} | {l2} |")
        fast = sp["estimators"].get("official, fast", {}).get("vs_official_loop_rel_l2")
        if fast:
            lines += ["", f"`official, fast` vs `official` (the loop): relative L2 difference of the embeddings, median "
                      f"{fast['median']:.1e}, max {fast['max']:.1e} (float rounding in another memory layout; where it "
                      "moves a sampled label across a class boundary, that batch's gradient changes)."]
        tf = sp["time_floor"]
        lines += ["", "Where the time goes: one Fisher batch (64 images, forward + backward, BatchNorm in train mode) "
                  f"is {tf['gflop_per_batch']:.2f} GFLOP on the shipped probe; this machine multiplies 512x512 matrices "
                  f"at {tf['gemm_gflops_single_thread']:.0f} GFLOP/s on one thread, so {tf['n_batches']} batches cannot "
                  f"take less than {tf['floor_s_per_task']:.1f} s per task in any exact float32 implementation. The "
                  f"plain loop runs at {tf['loop_gflops']:.0f} GFLOP/s ({1000 * tf['loop_s_per_batch']:.0f} ms/batch), "
                  f"the fast engine (channels-last) at {tf['fast_gflops']:.0f} GFLOP/s "
                  f"({1000 * tf['fast_s_per_batch']:.0f} ms/batch).", "",
                  "Agreement between estimators (Spearman of the seed-0 distance matrices):", "",
                  "| pair | Spearman |", "|---|---|"]
        lines += [f"| {k.replace(' | ', ' vs ')} | {v:.3f} |" for k, v in sp["cross_agreement_seed0"].items()]
        stc = sp.get("structure")
        if stc:
            lines += ["", "### Default evidence from these embeddings: BatchNorm in eval or train mode?", "",
                      f"Known structure in the same {len(stc['tasks'])} alphabets' embeddings (no extra run), means over "
                      f"seeds {sp['seeds']}. Higher is better. Family AUC: the probability that a same-script-family "
                      "pair is closer than a cross-family pair; NN same family: how often an alphabet's nearest "
                      "alphabet is of its family; Spearman(norm, error): embedding norm against the held-out error of "
                      "a linear head on the probe's features (the paper: the norm tracks difficulty).", "",
                      "| implementation | BatchNorm | family AUC | NN same family | Spearman(norm, error) | "
                      "seed agreement |", "|---|---|---|---|---|---|"]
            for name, r in stc["scores"].items():
                bn = "eval" if name in ("workbench default", "batch, BN eval", "per_sample, sampled labels") else (
                    "train" if name != "variational" else "eval")
                lines.append(f"| {name} | {bn} | {r['family_auc']:.3f} | {r['nn_same_family']:.2f} | "
                             f"{r['norm_vs_error_spearman']:.3f} | {fmt(r['seed_agreement'])} |")
            for pair, v in stc["votes"].items():
                lines += ["", f"{pair}: " + ", ".join(f"{k}: {x}" for k, x in v.items() if k != "majority")
                          + f". **Better on more scores: {v['majority']}.**"]
    st = report.get("default_study")
    if st:
        lines += ["", "## Default study: BatchNorm in eval or train mode?", "",
                  f"{st['n_tasks']} tasks (Omniglot alphabets + derived tasks), seeds {st['seeds']}; means over seeds. "
                  "Higher is better except the parent rank (1 = the parent is the nearest task). Expert selection: "
                  f"alpha = {ALPHA} (the paper's).", "",
                  "| configuration | family AUC | NN same family | parent rank (mean) | parent nearest | "
                  "Spearman(norm, error) | expert Spearman | expert top-1 | expert regret | seed agreement |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in st["summary"].items():
            lines.append(f"| {name} | {r['family_auc']:.3f} | {r['nn_same_family']:.2f} | {r['parent_rank_mean']:.2f} "
                         f"| {r['parent_nearest']:.2f} | {r['norm_vs_error_spearman']:.3f} | {r['expert_spearman']:.3f} "
                         f"| {r['expert_top1']:.2f} | {r['expert_regret']:.3f} | {fmt(r['seed_agreement'])} |")
        lines += ["", f"Chance for 'NN same family': {st['chance_nn_same_family']:.2f}. Votes (the default, BatchNorm "
                  "in eval mode, against the released configuration, train mode): "
                  + ", ".join(f"{k}: {v}" for k, v in st["votes"].items()) + f". **Decision: {st['decision']}.**"]
        if st.get("votes_official_eval_vs_train"):
            lines += ["", "`official` with BatchNorm in eval mode against the released train mode (BatchNorm the only "
                      "difference): " + ", ".join(f"{k}: {v}" for k, v in st["votes_official_eval_vs_train"].items())
                      + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["speed", "default", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="4 alphabets / a small study; prints only (unless --save)")
    parser.add_argument("--save", action="store_true", help="write results/task2vec.{json,md} even with --quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--study-seeds", type=int, nargs="+", default=None, help="default study seeds (default --seeds)")
    parser.add_argument("--estimators", nargs="+", default=None, choices=list(ESTIMATORS))
    parser.add_argument("--study-configs", nargs="+", default=DEFAULT_STUDY, choices=list(STUDY))
    parser.add_argument("--progress", default=None,
                        help="JSON-lines file of the speed part's embeddings as they finish; reused to resume")
    parser.add_argument("--alphabets", nargs="+", default=None, help="speed part tasks (default: the 12 alphabets)")
    args = parser.parse_args(argv)
    info = {**machine_info(("numpy", "torch", "tqdm")), "torch_threads_used": 1}
    path = RESULTS / "task2vec.json"
    report: dict[str, Any] = {"benchmark": "task2vec", "probe": "workbench/checkpoints/task2vec_probe.pt"}
    if path.exists() and args.part != "all" and not args.quick:
        old = json.loads(path.read_text())
        report.update({k: old[k] for k in ("speed", "default_study") if k in old})  # keep the part not re-run
    report["machine"] = info
    if args.part in ("speed", "all"):
        estimators = args.estimators or (QUICK_ESTIMATORS if args.quick else DEFAULT_ESTIMATORS)
        alphabets = args.alphabets or (QUICK if args.quick else ALPHABETS)
        report["speed"] = speed_part(alphabets, args.seeds, estimators, progress=args.progress)
    if args.part in ("default", "all"):
        report["default_study"] = default_part(args.study_seeds or args.seeds, args.quick, args.study_configs)
    report["load_average_at_end_of_run"] = [round(x, 2) for x in os.getloadavg()]
    text = markdown(report)
    print(text)
    if not args.quick or args.save:
        save_results(RESULTS / "task2vec", report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
