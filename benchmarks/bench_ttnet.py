"""TTNet on a 32-task family: zero-shot error against the baselines, and the slides' source-count table.

    python benchmarks/bench_ttnet.py                      # seeds 0-2: validation of F's variants, then every seed
    python benchmarks/bench_ttnet.py --stage prepare      # only train and cache the task models and the affinity
    python benchmarks/bench_ttnet.py --stage report       # write benchmarks/results/ttnet.{json,md} from the cache
    python benchmarks/bench_ttnet.py --quick              # the 10-task family at a small size; prints only

Every stage caches its result under ``$TTNET_CACHE`` (default /tmp/ttnet_cache; the task models with
``torch.save``, read back with ``weights_only=True``): a killed run resumes where it stopped.

**Data.** Real Omniglot characters as ink maps; the 32-task family of ``workbench.methods.ttnet_tasks.FAMILY``,
zero-shot tasks ``denoising, blur-mid, dilation-wide, shift-up, distance`` (fixed by a rule before any model of the
family was trained; see that module). Sizes are ``TaskFamilyConfig()``'s defaults: 1,024 training images in 4
subsets, 256 validation and 512 test images (evaluation alphabets), 400 steps per task model: 140 models per seed.

**Variants of F** (first seed only): each variant in ``VARIANTS`` is fitted with groups of known tasks held out of
F and scored on their *validation* images; the default ``TTNetConfig`` was chosen from this table, before the
zero-shot experiments ran.

**Zero-shot.** Per seed (images, θ_0, crowd, meta learner all change): TTNet with every known task as a source,
against the oracle, small data, most correlated, Γ-weighted average, the best single source (picked with labels)
and TTNet_LS vs small data; the label-fitted mixture as a diagnostic.

**Source count.** The slides' table: for 4, 6, 10, 15 and 20 sources, ``PER_SIZE`` random source sets per seed, a
TTNet trained on each set alone; win rate (share of test images with a lower error) against the Γ-weighted average
of the same sources and against the best single source, per zero-shot task.

One torch thread throughout (the machines are shared: the load average is recorded, and wall times include
waiting for the CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from workbench.train import History

from machine import machine_info, save_results  # benchmarks/machine.py
from workbench.methods.ttnet import (
    LAYOUT,
    METHODS,
    SMALL_TASKS,
    SMALL_ZERO_SHOT,
    Affinity,
    Experiment,
    TaskModels,
    TTNet,
    best_single_source,
    evaluate_zero_shot,
    source_count_runs,
    validation_groups,
    win_rate,
    crowd_gamma,
    make_task_data,
    measure_affinity,
    train_task_models,
    TaskFamilyConfig,
    TTNetConfig,
    forward,
    fit_mixture,
    forward_many,
    initial_parameters,
    per_image_loss,
    validate_on_known,
)

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ("oracle", "small data", "most correlated", "Γ-weighted average")
MIXTURE = "label-fitted mixture"  # a diagnostic upper bound for F's mixture, not a zero-shot method


def load() -> float:
    return round(os.getloadavg()[0], 2)


# ----------------------------------------------------------------------------------------------------------
# Speed of the batched models
# ----------------------------------------------------------------------------------------------------------
def _grouped(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The same M models as one grouped convolution: x (B, M, 28, 28)."""
    p, M = LAYOUT.unflatten(flat), flat.shape[0]
    h = F.relu(F.conv2d(x, p["encoder.conv1.weight"].reshape(M * 8, 1, 3, 3), p["encoder.conv1.bias"].reshape(-1),
                        stride=2, padding=1, groups=M))
    h = F.relu(F.conv2d(h, p["encoder.conv2.weight"].reshape(M * 16, 8, 3, 3), p["encoder.conv2.bias"].reshape(-1),
                        stride=2, padding=1, groups=M))
    h = F.relu(F.conv_transpose2d(h, p["decoder.deconv1.weight"].reshape(M * 16, 8, 4, 4),
                                  p["decoder.deconv1.bias"].reshape(-1), stride=2, padding=1, groups=M))
    return F.conv_transpose2d(h, p["decoder.deconv2.weight"].reshape(M * 8, 1, 4, 4),
                              p["decoder.deconv2.bias"].reshape(-1), stride=2, padding=1, groups=M)


def speed(models: int = 66, batch: int = 32, steps: int = 20) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(models, batch, 28, 28, generator=gen)
    y = torch.rand(models, batch, 28, 28, generator=gen)

    def vmap_loss(flat):
        return ((forward_many(flat, x) - y) ** 2).mean(dim=(1, 2, 3)).sum()

    def grouped_loss(flat):
        out = _grouped(flat, x.transpose(0, 1)).transpose(0, 1)
        return ((out - y) ** 2).mean(dim=(1, 2, 3)).sum()

    def loop_loss(flat):
        return sum(((forward(LAYOUT.unflatten(flat[m]), x[m].unsqueeze(1)).squeeze(1) - y[m]) ** 2).mean()
                   for m in range(models))

    rows = []
    for name, fn in (("torch.vmap (used)", vmap_loss), ("grouped convolution", grouped_loss), ("Python loop", loop_loss)):
        flat = initial_parameters(0).expand(models, -1).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([flat], lr=1e-3)
        times = []
        for step in range(steps + 3):
            start = time.perf_counter()
            loss = fn(flat)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 3:  # warm-up
                times.append(time.perf_counter() - start)
        rows.append({"implementation": name, "models": models, "batch": batch,
                     "ms_per_step_median": round(1000 * float(np.median(times)), 1),
                     "ms_per_model_step": round(1000 * float(np.median(times)) / models, 2), "load": load()})
        print(f"{name:<22} {rows[-1]['ms_per_step_median']:7.1f} ms/step", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------------
# Zero-shot and held-out results
# ----------------------------------------------------------------------------------------------------------
CACHE = Path(os.environ.get("TTNET_CACHE", "/tmp/ttnet_cache"))


def prepare(seed: int, family_kw: dict[str, Any], cache: bool = False) -> Experiment:
    """Data, task models, measured affinity and crowd Γ of one seed (the TTNet-free part of the pipeline).

    With ``cache``, the task models and the affinity are saved to ``$TTNET_CACHE/seed<seed>.pt`` (default
    /tmp/ttnet_cache) and loaded from there (``weights_only=True``) when the settings match: a long benchmark
    can be resumed, and the meta-learner experiments rerun without retraining 140 models.
    """
    family = TaskFamilyConfig(seed=seed, num_threads=1, **family_kw)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    data = make_task_data(family)
    seconds["data"] = time.perf_counter() - start
    path = CACHE / f"seed{seed}{'-quick' if family_kw else ''}.pt"
    key = json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in family.__dict__.items()
                      if k not in ("num_threads", "crowd_mix")}, sort_keys=True, default=str)
    stored = torch.load(path, weights_only=True) if cache and path.exists() else None
    if stored is not None and stored["key"] == key:
        models = TaskModels(list(data.tasks), list(family.known), stored["init"], stored["full"], stored["subsets"],
                            History(), float(stored["models_s"]))
        affinity = Affinity(list(data.tasks), stored["matrix"].numpy(), stored["losses"].numpy(), stored["scratch"],
                            float(stored["affinity_s"]))
    else:
        models = train_task_models(data, family)
        affinity = measure_affinity(data, models, family)
        if cache:
            CACHE.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "init": models.init, "full": models.full, "subsets": models.subsets,
                        "models_s": models.seconds, "matrix": torch.from_numpy(affinity.matrix),
                        "losses": torch.from_numpy(affinity.losses), "scratch": affinity.scratch,
                        "affinity_s": affinity.seconds}, path)
    seconds["task models"], seconds["affinity"] = models.seconds, affinity.seconds
    start = time.perf_counter()
    gamma = crowd_gamma(affinity.matrix, data.tasks, n_annotators=family.n_annotators, mix=family.crowd_mix,
                        coverage=family.crowd_coverage, method=family.crowd_method, seed=family.seed)
    seconds["crowd"] = time.perf_counter() - start
    return Experiment(family, TTNetConfig(seed=seed, num_threads=1), data, models, affinity, gamma, None, None,
                      seconds)


SIZES = (4, 6, 10, 15, 20)  # the slides' source counts
PER_SIZE = 1  # random source sets per size and seed (1: what the shared CPU allowed; 2 seeds give 2 sets per size)
VARIANTS: dict[str, dict[str, Any]] = {  # F's variants compared on known tasks held out of F (validation images)
    "prior, pooled residual": {"attention": "prior", "residual": "pooled"},
    "prior, no residual": {"attention": "prior", "residual": "none"},
    "branch (first version)": {"attention": "branch", "residual": "pooled"},
    "prior + branch, pooled residual": {"attention": "prior+branch", "residual": "pooled"},
}


def cached_json(path: Path, compute):
    """``compute()``'s JSON-able result, saved to ``path`` and read back on a rerun (the benchmark resumes)."""
    if path.exists():
        return json.loads(path.read_text())
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, ensure_ascii=False))
    return out


def validate_variants(seed: int, family_kw: dict[str, Any], ttnet_kw: dict[str, Any], names: list[str],
                      n_groups: int = 2, size: int = 5) -> list[dict[str, Any]]:
    """Variants ``names`` of F on ``n_groups`` groups of ``size`` known tasks, each group held out of F together,
    scored on *validation* images (never a zero-shot task, never a test image)."""
    exp = prepare(seed, family_kw, cache=True)
    groups = validation_groups(exp.family.known, n_groups, size, seed=seed)
    rows = []
    for name in names:
        kw = VARIANTS[name]
        config = TTNetConfig(seed=seed, num_threads=1, **{**ttnet_kw, **kw})
        start = time.perf_counter()
        table = validate_on_known(exp.models, exp.crowd, exp.data, config, split="val", held_out=groups)
        seconds = time.perf_counter() - start
        ratio = float(np.exp(np.mean(np.log(table["TTNet"] / table["Γ-weighted average"]))))
        wins = int((table["TTNet"] < table["Γ-weighted average"]).sum())
        print(f"seed {seed} variant {name:<34} error ratio vs Γ-avg {ratio:.3f}, below it on {wins} of "
              f"{len(table)} ({seconds:.0f} s)", flush=True)
        rows.append({"seed": seed, "variant": name, **kw, "ratio": ratio, "wins": wins, "n": len(table),
                     "seconds": round(seconds, 1), "groups": groups,
                     "tasks": json.loads(table.reset_index().to_json(orient="records", force_ascii=False))})
    return rows


def one_seed(seed: int, family_kw: dict[str, Any], ttnet_kw: dict[str, Any], sizes: tuple[int, ...],
             per_size: int) -> dict[str, Any]:
    load_before = load()
    start = time.perf_counter()
    exp = prepare(seed, family_kw, cache=True)
    config = TTNetConfig(seed=seed, num_threads=1, **ttnet_kw)
    ttnet = TTNet(config).fit(exp.models, exp.crowd, exp.data)
    exp.seconds["TTNet"] = ttnet.seconds_
    t0 = time.perf_counter()
    result = evaluate_zero_shot(ttnet, exp.models, exp.affinity, exp.data, exp.family)
    exp.seconds["evaluation"] = time.perf_counter() - t0
    wall = time.perf_counter() - start
    zero_shot = []
    for task in result.tasks:
        errors = result.errors[task]
        sources = ttnet.sources_for(task)
        row = {"seed": seed, "task": task, **{m: float(errors[m].mean()) for m in METHODS},
               "most correlated source": result.most_correlated[task]}
        best, best_errors = best_single_source(exp.models, exp.data, sources, task)
        row.update({"best single": float(best_errors.mean()), "best single source": best})
        # the room F has: the best per-tensor mixture of the same sources, fitted on the task's labels
        theta, _ = fit_mixture(exp.models, exp.data, sources, task, seed=seed, num_threads=1)
        k = exp.data.index(task)
        row[MIXTURE] = float(per_image_loss(theta[None], exp.data.inputs["test"][k],
                                            exp.data.targets["test"][k]).mean())
        row.update({f"TTNet win vs {b}": win_rate(errors["TTNet"], errors[b]) for b in BASELINES})
        row["TTNet win vs best single"] = win_rate(errors["TTNet"], best_errors)
        row["TTNet_LS win vs small data"] = win_rate(errors["TTNet_LS"], errors["small data"])
        zero_shot.append(row)
        print(f"seed {seed} {task:<14} " + "  ".join(f"{m} {row[m]:.4f}" for m in (*METHODS, MIXTURE)), flush=True)
    from workbench.crowd import recovery

    out: dict[str, Any] = {"seed": seed, "zero_shot": zero_shot, "wall_s": round(wall, 1), "load_before": load_before,
                           "stages_s": {k: round(v, 1) for k, v in exp.seconds.items()},
                           "n_models": int(exp.models.full.shape[0] + exp.models.subsets[:, :, 0].numel()),
                           "crowd_spearman": round(recovery(exp.crowd.aggregate, exp.crowd.truth).spearman, 3),
                           "affinity": exp.affinity.matrix.round(4).tolist(), "gamma": exp.crowd.gamma.tolist(),
                           "tasks": list(exp.data.tasks)}
    start = time.perf_counter()
    runs = source_count_runs(dataclasses.replace(exp, config=config), sizes, per_size)
    out["source_count"] = json.loads(runs.to_json(orient="records", force_ascii=False))
    out["source_count_s"] = round(time.perf_counter() - start, 1)
    summary = runs.groupby("sources")[["win vs Γ-avg", "win vs best single"]].mean().round(3)
    print(f"seed {seed} source count:\n{summary.to_string()}", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------
def source_count_summary(runs: list[dict]) -> list[dict[str, Any]]:
    """Per number of sources: mean win rate (over sets, seeds and zero-shot tasks) vs the Γ-weighted average and
    the best single source, and in how many (set, task, seed) cases TTNet's *mean* error is the lower."""
    import pandas as pd

    frame = pd.DataFrame([r for run in runs for r in run.get("source_count", [])])
    if frame.empty:
        return []
    rows = []
    for n, part in frame.groupby("sources"):
        row = {"sources": int(n), "cases": len(part), "sets": int(part.groupby(["seed", "set"]).ngroups),
               "win vs Γ-avg": float(part["win vs Γ-avg"].mean()),
               "win vs best single": float(part["win vs best single"].mean()),
               "below Γ-avg": int((part["TTNet"] < part["Γ-weighted average"]).sum()),
               "below best single": int((part["TTNet"] < part["best single"]).sum()),
               "seconds per fit": float(part.groupby(["seed", "set"])["seconds"].first().mean())}
        for task, t in part.groupby("task", sort=False):
            row[f"win vs Γ-avg {task}"] = float(t["win vs Γ-avg"].mean())
        rows.append(row)
    return rows


def markdown(info: dict, settings: dict, spd: list | None, runs: list[dict], validation: list[dict]) -> str:
    lines = ["# TTNet benchmark", "",
             f"`benchmarks/bench_ttnet.py`, {info['date_utc']}. Machine: {info['cpus_usable']} usable CPUs "
             f"({info['cpu']}), torch {info['versions'].get('torch')}, Python {info['python']}, one torch thread. "
             f"Load average at start: {info['load_average_at_start']} (a shared machine: wall times include "
             "waiting for the CPU).", "",
             f"Settings: {json.dumps(settings, ensure_ascii=False)}", ""]
    if spd:
        lines += ["## Training many small models at once", "",
                  "| implementation | models | batch | ms per step (median) | ms per model-step | load |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['implementation']} | {r['models']} | {r['batch']} | {r['ms_per_step_median']} | "
                  f"{r['ms_per_model_step']} | {r['load']} |" for r in spd]
        lines.append("")
    if validation:
        lines += ["## Variants of F on known tasks held out of F (validation images)", "",
                  "Groups of known tasks held out of F together (never a zero-shot task); error ratio = geometric "
                  "mean over the held-out tasks of TTNet's validation MSE / the Γ-weighted average's (lower is "
                  "better).", "", "| seed | variant | error ratio | below Γ-avg | fit time (all groups) |",
                  "|---:|---|---:|---:|---:|"]
        lines += [f"| {r['seed']} | {r['variant']} | {r['ratio']:.3f} | {r['wins']} of {r['n']} | {r['seconds']} s |"
                  for r in validation]
        lines += ["", "Held-out groups: " + "; ".join(", ".join(g) for g in validation[0]["groups"]) + ".", ""]
    if runs:
        summary = source_count_summary(runs)
        if summary:
            tasks = [k[len("win vs Γ-avg "):] for k in summary[0] if k.startswith("win vs Γ-avg ")]
            lines += ["## How many source tasks? (the slides' table)", "",
                      f"Per number of sources: {PER_SIZE} random source sets per seed (seeded), a TTNet trained on "
                      "each set alone, scored on every zero-shot task. *Win rate* = share of test images on which "
                      "TTNet's error is lower, averaged over sets, seeds and tasks; *below* = (set, task, seed) cases "
                      "where TTNet's mean error is lower. *Best single*: the set's source whose model has the lowest "
                      "test error on the task (picked with the task's labels).", "",
                      "| sources | win vs Γ-avg | below Γ-avg | win vs best single | below best single | "
                      + " | ".join(f"win vs Γ-avg: {t}" for t in tasks) + " | s per fit |",
                      "|---:|---:|---:|---:|---:|" + "---:|" * len(tasks) + "---:|"]
            for r in summary:
                lines.append(f"| {r['sources']} | {100 * r['win vs Γ-avg']:.1f}% | {r['below Γ-avg']} of {r['cases']} | "
                             f"{100 * r['win vs best single']:.1f}% | {r['below best single']} of {r['cases']} | "
                             + " | ".join(f"{100 * r[f'win vs Γ-avg {t}']:.1f}%" for t in tasks)
                             + f" | {r['seconds per fit']:.1f} |")
            lines.append("")
            first = runs[0]
            known = [t for t in first["tasks"] if t not in {z["task"] for z in first["zero_shot"]}]
            lines += [f"### Seed {first['seed']} in the slides' shape (win rate vs the Γ-weighted average, %)", "",
                      "| sources | " + " | ".join(known) + " | " + " | ".join(tasks) + " |",
                      "|---:|" + "---|" * len(known) + "---:|" * len(tasks)]
            by_set: dict[int, dict[str, Any]] = {}
            for r in first["source_count"]:
                by_set.setdefault(r["set"], {"members": r["members"].split(","), "n": r["sources"]})[r["task"]] = \
                    r["win vs Γ-avg"]
            for entry in by_set.values():
                lines.append(f"| {entry['n']} | " + " | ".join("✓" if t in entry["members"] else "x" for t in known)
                             + " | " + " | ".join(f"{100 * entry[t]:.0f}" for t in tasks) + " |")
            lines.append("")
        lines += ["## Zero-shot tasks, all known tasks as sources: test mean squared error per method", "",
                  "Lower is better. *TTNet win* = share of the test images on which TTNet's error is lower than the "
                  "reference's; *LS win* = TTNet_LS vs small data. *best single*: the source with the lowest test "
                  f"error (picked with labels). *{MIXTURE}*: the sources' full models mixed with per-tensor weights "
                  "fitted on the task's labelled training images (fit_mixture): not zero-shot, the best a perfect "
                  "prediction of F's mixture weights could reach.", "",
                  "| seed | task | " + " | ".join(METHODS) + f" | best single | {MIXTURE} | TTNet win vs Γ-avg | "
                  "vs best single | LS win vs small |",
                  "|---:|---|" + "---:|" * len(METHODS) + "---:|---:|---:|---:|---:|"]
        for run in runs:
            for r in run["zero_shot"]:
                best = min(r[m] for m in METHODS if m not in ("oracle", "TTNet_LS"))
                cells = [f"**{r[m]:.4f}**" if r[m] == best else f"{r[m]:.4f}" for m in METHODS]
                lines.append(f"| {r['seed']} | {r['task']} | " + " | ".join(cells) + f" | {r['best single']:.4f} | "
                             f"{r[MIXTURE]:.4f} | {100 * r['TTNet win vs Γ-weighted average']:.0f}% | "
                             f"{100 * r['TTNet win vs best single']:.0f}% | "
                             f"{100 * r['TTNet_LS win vs small data']:.0f}% |")
        wins = [(r["TTNet"] < r["Γ-weighted average"]) for run in runs for r in run["zero_shot"]]
        ls = [(r["TTNet_LS"] < r["small data"]) for run in runs for r in run["zero_shot"]]
        room = float(np.exp(np.mean([np.log(r[MIXTURE] / r["Γ-weighted average"]) for run in runs
                                     for r in run["zero_shot"]])))
        lines += ["", "Bold: the lowest error among the methods without target labels and *small data* (oracle and "
                  "TTNet_LS excluded).", "",
                  f"TTNet below the Γ-weighted average (mean error): {sum(wins)} of {len(wins)} (task, seed) cases. "
                  f"TTNet_LS below small data: {sum(ls)} of {len(ls)}. The label-fitted mixture's error is "
                  f"{room:.2f}x the Γ-weighted average's (geometric mean).", ""]
        lines += ["## Wall time per seed (one torch thread)", "",
                  "| seed | models trained | data | task models | affinity | crowd | TTNet fit | evaluation | "
                  "source-count fits | crowd Spearman | load before |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for run in runs:
            s = run["stages_s"]
            lines.append(f"| {run['seed']} | {run['n_models']} | {s['data']} s | {s['task models']} s | "
                         f"{s['affinity']} s | {s['crowd']} s | {s['TTNet']} s | {s['evaluation']} s | "
                         f"{run['source_count_s']} s ({len(run['source_count']) // len(run['zero_shot'])} fits) | "
                         f"{run['crowd_spearman']} | {run['load_before']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seed 0 at a small size; prints only unless --save")
    parser.add_argument("--save", action="store_true", help="write the results (the default for a full run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; quick 0)")
    parser.add_argument("--stage", choices=["prepare", "validate", "seed", "report", "all"], default="all",
                        help="prepare: cache the task models of --seeds; validate: F's variants (first seed); "
                             "seed: the experiments of --seeds; report: write the results from the cache")
    parser.add_argument("--speed", action="store_true", help="also time vmap vs grouped convolution vs a loop")
    parser.add_argument("--variants", type=int, nargs="+", default=None,
                        help="with --stage validate: which of VARIANTS (indices; default all)")
    parser.add_argument("--output", type=Path, default=RESULTS / "ttnet",
                        help="path stem of the .json and .md results (default: benchmarks/results/ttnet)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("WORKBENCH_REPORT", "1")  # no progress bars in the log

    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    family_kw: dict[str, Any] = ({"tasks": SMALL_TASKS, "zero_shot": SMALL_ZERO_SHOT, "n_train": 256, "n_subsets": 2,
                                  "n_val": 64, "n_test": 128, "steps": 120, "finetune_steps": 20}
                                 if args.quick else {})
    ttnet_kw: dict[str, Any] = {"self_steps": 20, "transfer_steps": 100} if args.quick else {}
    sizes, per_size = ((2, 4, 7), 1) if args.quick else (SIZES, PER_SIZE)
    tag = "-quick" if args.quick else ""
    settings = {"quick": args.quick, "seeds": seeds, "family": {**TaskFamilyConfig().__dict__, **family_kw},
                "ttnet": {**TTNetConfig().__dict__, **ttnet_kw}, "source_counts": list(sizes), "per_size": per_size,
                "variants": VARIANTS}
    settings["family"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings["family"].items()}
    if args.stage == "prepare":
        for s in seeds:
            prepare(s, family_kw, cache=True)
        return 0
    validation = []
    if args.stage in ("validate", "all", "report"):
        picked = range(len(VARIANTS)) if args.variants is None or args.stage != "validate" else args.variants
        for i in picked:
            path = CACHE / f"validation{tag}-seed{seeds[0]}-{i}.json"
            if args.stage == "report" and not path.exists():
                continue
            name = list(VARIANTS)[i]
            groups = (2, 2) if args.quick else (2, 5)  # (groups, tasks per group) held out of F
            validation += cached_json(path, lambda name=name: validate_variants(seeds[0], family_kw, ttnet_kw,
                                                                                [name], *groups))
        if args.stage == "validate":
            return 0
    runs = []
    for s in seeds:
        path = CACHE / f"run{tag}-seed{s}.json"
        if args.stage == "report" and not path.exists():
            continue
        runs.append(cached_json(path, lambda s=s: one_seed(s, family_kw, ttnet_kw, sizes, per_size)))
    if args.stage == "seed":
        return 0
    info = machine_info(("numpy", "torch", "scipy"))
    spd = speed(steps=5 if args.quick else 20) if args.speed else None
    if args.save or not args.quick:
        save_results(args.output, {"benchmark": "ttnet", "machine": info, "settings": settings, "speed": spd,
                                   "validation": validation, "runs": runs,
                                   "source_count_summary": source_count_summary(runs)},
                     markdown(info, settings, spd, runs, validation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
