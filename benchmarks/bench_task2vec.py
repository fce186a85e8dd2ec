"""Task2Vec: seconds per task embedding and agreement across seeds, for each estimator, on the shipped probe.

    python benchmarks/bench_task2vec.py                 # 12 alphabets x 2 seeds, writes results/task2vec.{json,md}
    python benchmarks/bench_task2vec.py --quick         # 4 alphabets, prints only (add --save to write)

What is compared (all on the shipped Omniglot probe, the same tasks, ``skip_layers=0``, ``max_samples=10000``):

* ``official loop`` — a straightforward reimplementation, inside this script, of the official per-batch code
  (awslabs/aws-cv-task2vec ``task2vec.py``): features cached with forward pre-hooks through a ``DataLoader``, the
  head trained with ``nn.Linear`` + ``torch.optim.Adam`` on a ``WeightedRandomSampler`` loader (10 epochs x 10,000
  samples), then the Monte Carlo Fisher as the squared gradient of each batch's mean loss (156 batches of 64,
  every parameter requiring grad). Run twice: with BatchNorm in eval mode (as our default) and in train mode
  (``official loop, train BN``: what the released code actually does, issue #23).
* ``batch`` — our implementation of the same estimator (``Task2Vec(fisher="batch")``).
* ``per_sample`` — our default (``Task2Vec()``): per-sample squared gradients, each cached sample once, with
  Gaussian output gradients of the same second moment as sampled labels (``fisher_labels="gaussian"``).
* ``per_sample, sampled labels`` — the same with one label per image drawn from the model (the paper's sampling).
* ``variational`` — the variational estimator (``Task2Vec(method="variational")``, 2 epochs).

Reported per estimator: wall and CPU seconds per task (this machine is shared: CPU time is the steadier
number), the peak resident memory of a fresh process running only that estimator (and its increase over the
process after loading the probe and data), and the Spearman correlation between the distance matrices of
seed 0 and seed 1 (agreement across seeds; 1 = the same ordering of task pairs). Between estimators: Spearman
of their seed-0 matrices. Every process runs torch on one thread (see the notes in the markdown).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, save_results  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).resolve().parent / "results"
#: 12 alphabets from several script families, background and evaluation sets.
ALPHABETS = ["Latin", "Greek", "Cyrillic", "Bengali", "Gujarati", "Malayalam", "Kannada", "Japanese_(hiragana)",
             "Japanese_(katakana)", "Syriac_(Estrangelo)", "Syriac_(Serto)", "Braille"]
QUICK = ["Latin", "Greek", "Bengali", "Kannada"]
ESTIMATORS = ["official loop", "official loop, train BN", "batch", "per_sample", "per_sample, sampled labels",
              "variational"]


# -------------------------------------------------------------------------------------------------------------
# The official per-batch loop, reimplemented plainly (the reference)
# -------------------------------------------------------------------------------------------------------------


def official_embed(probe, images, labels, *, seed: int, bn_train: bool, max_samples: int = 10_000):
    """awslabs/aws-cv-task2vec ``Task2Vec(probe, skip_layers=0, max_samples).embed(dataset)``, method montecarlo."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

    from workbench.methods.task2vec import Embedding

    torch.manual_seed(seed)
    n_classes = int(labels.max()) + 1
    model = copy.deepcopy(probe)
    model.fc = nn.Linear(model.fc.in_features, n_classes)  # get_model(num_classes=...) gives a fresh classifier
    model.train(bn_train)
    for p in model.parameters():
        p.requires_grad_(True)
    dataset = TensorDataset(model.prepare(images), labels)

    def loader(ds, labels_):  # task2vec._get_loader
        counts = np.eye(n_classes)[labels_.numpy()].sum(0)
        weights = 1.0 / counts[labels_.numpy()] / n_classes
        sampler = WeightedRandomSampler(weights / weights.sum(), num_samples=10_000)
        return DataLoader(ds, sampler=sampler, batch_size=64, num_workers=0, drop_last=True)

    # _cache_features: forward pre-hook on the classifier, the first floor(max_samples/64) - 1 batches in order
    cached = []
    hook = model.fc.register_forward_pre_hook(lambda layer, inp: cached.append(inp[0].data.clone()))
    data_loader = DataLoader(dataset, shuffle=False, batch_size=64, num_workers=0, drop_last=False)
    n_batches = min(math.floor(max_samples / 64) - 1, len(data_loader))
    targets = []
    with torch.no_grad():
        for x, y in itertools.islice(data_loader, n_batches):
            targets.append(y)
            model(x)
    hook.remove()
    features, targets = torch.cat(cached), torch.cat(targets)
    # _fit_classifier
    opt = torch.optim.Adam(model.fc.parameters(), lr=4e-4, weight_decay=1e-4)
    for _ in range(10):
        for x, y in loader(TensorDataset(features, targets), targets):
            opt.zero_grad()
            F.cross_entropy(model.fc(x), y).backward()
            opt.step()
    # montecarlo_fisher (skip_layers=0: the official code passes the whole dataset here)
    acc = {p: torch.zeros_like(p) for p in model.parameters()}
    count = {p: 0 for p in model.parameters()}
    for x, _ in loader(dataset, labels):
        out = model(x)
        y = torch.multinomial(F.softmax(out, dim=-1), 1).detach().view(-1)
        loss = F.cross_entropy(out, y)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                acc[p] += p.grad.data ** 2
                count[p] += 1
    # extract_embedding
    hess, slices, start = [], [], 0
    for name, module in model.named_modules():
        if module is model.fc or not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        g2 = (acc[module.weight] / max(count[module.weight], 1)).numpy()
        per_filter = g2.reshape(g2.shape[0], -1).mean(1)
        hess.append(per_filter)
        slices.append((name, start, start + per_filter.size))
        start += per_filter.size
    hessian = np.concatenate(hess)
    return Embedding(hessian, np.ones_like(hessian), {"estimator": "official", "layers": slices})


# -------------------------------------------------------------------------------------------------------------
# One estimator in a fresh process
# -------------------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_estimator(name: str, alphabets: list[str], seeds: list[int]) -> dict:
    """Embed every alphabet with every seed; return timings, memory and the hessians."""
    import torch

    torch.set_num_threads(1)
    from workbench.data import load_omniglot
    from workbench.methods.task2vec import Task2Vec, as_task, load_probe

    omniglot = load_omniglot(28)
    probe = load_probe()
    tasks = [as_task(omniglot.alphabet_task(a), name=a) for a in alphabets]
    baseline = rss_mb()
    walls, cpus, hessians = [], [], {}
    for seed in seeds:
        hessians[seed] = []
        for task in tasks:
            wall, cpu = time.perf_counter(), time.process_time()
            if name.startswith("official loop"):
                e = official_embed(probe, task.images, task.labels, seed=seed, bn_train="train BN" in name)
            else:
                kwargs = {"variational": dict(method="variational"), "batch": dict(fisher="batch"),
                          "per_sample, sampled labels": dict(fisher_labels="sampled")}.get(name, {})
                e = Task2Vec(probe, seed=seed, **kwargs).embed(task)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            hessians[seed].append(e.hessian.tolist())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"estimator": name, "wall_s_per_task": float(np.mean(walls)), "cpu_s_per_task": float(np.mean(cpus)),
            "wall_s_all": walls, "peak_rss_mb": peak, "peak_over_baseline_mb": peak - baseline,
            "hessians": {str(k): v for k, v in hessians.items()}}


def in_subprocess(name: str, alphabets: list[str], seeds: list[int]) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); import bench_task2vec as b; "
            "print('RESULT' + json.dumps(b.run_estimator(%r, %r, %r)))") % (str(Path(__file__).parent), name,
                                                                             alphabets, seeds)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


# -------------------------------------------------------------------------------------------------------------
# Agreement and the report
# -------------------------------------------------------------------------------------------------------------


def matrices(result: dict) -> dict[int, np.ndarray]:
    from workbench.methods.task2vec import Embedding, distance_matrix

    out = {}
    for seed, hs in result["hessians"].items():
        es = [Embedding(np.array(h), np.ones(len(h)), {}) for h in hs]
        out[int(seed)] = distance_matrix(es)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 alphabets, prints only (unless --save)")
    parser.add_argument("--save", action="store_true", help="write results/task2vec.{json,md} even with --quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--estimators", nargs="+", default=ESTIMATORS, choices=ESTIMATORS)
    args = parser.parse_args(argv)
    alphabets = QUICK if args.quick else ALPHABETS
    info = {**machine_info(("numpy", "torch")), "torch_threads_used": 1}
    load_before = os.getloadavg()
    results = {}
    for name in args.estimators:
        t0 = time.perf_counter()
        results[name] = in_subprocess(name, alphabets, args.seeds)
        print(f"{name:<26} {results[name]['wall_s_per_task']:7.2f} s/task wall, "
              f"{results[name]['cpu_s_per_task']:7.2f} s/task CPU, peak {results[name]['peak_rss_mb']:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    from workbench.methods.task2vec import matrix_agreement

    D = {name: matrices(r) for name, r in results.items()}
    seeds = sorted(args.seeds)
    for name, r in results.items():
        pairs = list(itertools.combinations(seeds, 2))
        r["seed_agreement"] = float(np.mean([matrix_agreement(D[name][a], D[name][b]) for a, b in pairs])) if pairs else None
    cross = {f"{a} | {b}": matrix_agreement(D[a][seeds[0]], D[b][seeds[0]])
             for a, b in itertools.combinations(results, 2)}
    reference = "official loop"
    speedup = {name: results[reference]["wall_s_per_task"] / r["wall_s_per_task"]
               for name, r in results.items()} if reference in results else {}
    speedup_cpu = {name: results[reference]["cpu_s_per_task"] / r["cpu_s_per_task"]
                   for name, r in results.items()} if reference in results else {}
    report = {
        "benchmark": "task2vec", "machine": info, "load_average_after": os.getloadavg(),
        "tasks": alphabets, "seeds": seeds, "probe": "workbench/checkpoints/task2vec_probe.pt",
        "settings": {"skip_layers": 0, "max_samples": 10000, "bn_mode": "eval (except 'official loop, train BN')"},
        "estimators": {name: {k: v for k, v in r.items() if k not in ("hessians", "wall_s_all")}
                       for name, r in results.items()},
        "speedup_vs_official_loop_wall": speedup, "speedup_vs_official_loop_cpu": speedup_cpu,
        "cross_estimator_agreement_seed0": cross,
    }
    lines = [
        "# Task2Vec benchmark", "",
        f"Run {info['date_utc']} on {info['cpu']} ({info['cpu_count']} cores, torch "
        f"{info['versions']['torch']}, 1 thread per process). Load average before/after: "
        f"{load_before[0]:.1f} / {report['load_average_after'][0]:.1f} (the machine is shared: CPU seconds are the "
        "steadier figure).", "",
        f"{len(alphabets)} Omniglot alphabet tasks ({', '.join(alphabets)}), seeds {seeds}, shipped probe, "
        "skip_layers=0, BatchNorm in eval mode unless noted.", "",
        "| estimator | s/task (wall) | s/task (CPU) | speed-up vs official loop (CPU) | peak RSS MB (over baseline) | "
        "agreement across seeds (Spearman) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        sp = f"{speedup_cpu.get(name, float('nan')):.1f}x" if speedup_cpu else "-"
        agree = f"{r['seed_agreement']:.3f}" if r["seed_agreement"] is not None else "-"
        lines.append(f"| {name} | {r['wall_s_per_task']:.2f} | {r['cpu_s_per_task']:.2f} | {sp} | "
                     f"{r['peak_rss_mb']:.0f} ({r['peak_over_baseline_mb']:.0f}) | {agree} |")
    lines += ["", "Agreement between estimators (Spearman of the seed-0 distance matrices):", "",
              "| pair | Spearman |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in cross.items()]
    lines += ["", "Notes: wall times include waiting for the CPU while other jobs ran on this shared machine (each row "
              "was measured at a different time); the CPU seconds are the fair comparison. "
              "`official loop` is this script's plain reimplementation of the released per-batch code "
              "(DataLoader, autograd, every parameter requiring grad); `per_sample` is `Task2Vec()`'s default path. "
              "Estimators of different kinds differ in scale (batch ~ F/64, per-sample ~ F), which the normalised "
              "cosine distance does not see within one estimator."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick or args.save:
        save_results(RESULTS / "task2vec", report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
