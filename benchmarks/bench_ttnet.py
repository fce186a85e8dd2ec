"""TTNet: zero-shot error against the baselines for each held-out task, with wall times.

    python benchmarks/bench_ttnet.py            # full run, seeds 0-4 (~25 min on one busy core), writes benchmarks/results/ttnet.{json,md}
    python benchmarks/bench_ttnet.py --quick    # one seed at a small size, prints only (add --save to write)

**Data.** Real Omniglot characters as ink maps; the 10-task family of ``workbench.methods.ttnet.DEFAULT_TASKS``,
zero-shot tasks ``denoising, edges, distance`` (chosen before any TTNet run: each has a known task at the top
correlation level in the measured affinity). Sizes are ``TaskFamilyConfig()``'s defaults: 1,024 training
images in 8 subsets, 256 validation and 512 test images (evaluation alphabets), 400 steps per task model.

**Zero-shot.** For each seed (images, θ_0, crowd, meta learner all change), ``run_experiment`` trains every
model, measures the affinity, simulates 30 annotators and aggregates Γ with Dawid-Skene, fits TTNet (default
``TTNetConfig``) and scores every method per test image: mean squared error and TTNet's win rate (share of test
images with a lower error) against each baseline.

**Held out from F, among the known tasks.** ``validate_on_known`` leaves each known task out of TTNet's
training in turn and regresses it from Γ: seven more held-out tasks per seed (scored on test images here; the
settings were chosen on validation images, see the module docstring).

**Source count.** The slides' table for seed 0: TTNets trained on random sets of 2, 4 and 7 known tasks; win
rate against the Γ-weighted average on each zero-shot task.

**Speed.** One training step of 66 encoder-decoders (batches of 32, forward + backward + Adam) with
``torch.vmap``, as one grouped convolution, and as a Python loop; then each pipeline stage's wall time. One torch
thread throughout (the machines are shared: the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from machine import machine_info, save_results  # benchmarks/machine.py
from workbench.methods.ttnet import (
    LAYOUT,
    METHODS,
    TaskFamilyConfig,
    TTNetConfig,
    forward,
    fit_mixture,
    forward_many,
    initial_parameters,
    per_image_loss,
    run_experiment,
    source_count_table,
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
def one_seed(seed: int, family_kw: dict[str, Any], ttnet_kw: dict[str, Any], with_left_out: bool,
             with_table: bool) -> dict[str, Any]:
    family = TaskFamilyConfig(seed=seed, num_threads=1, **family_kw)
    config = TTNetConfig(seed=seed, num_threads=1, **ttnet_kw)
    load_before = load()
    start = time.perf_counter()
    exp = run_experiment(family, config)
    wall = time.perf_counter() - start
    result = exp.result
    zero_shot = []
    for task in result.tasks:
        errors = result.errors[task]
        row = {"seed": seed, "task": task, **{m: float(errors[m].mean()) for m in METHODS},
               "most correlated source": result.most_correlated[task]}
        # the room F has: the best per-tensor mixture of the same sources, fitted on the task's labels
        theta, _ = fit_mixture(exp.models, exp.data, exp.ttnet.sources_for(task), task, seed=seed, num_threads=1)
        k = exp.data.index(task)
        row[MIXTURE] = float(per_image_loss(theta[None], exp.data.inputs["test"][k],
                                            exp.data.targets["test"][k]).mean())
        row.update({f"TTNet win vs {b}": float(np.mean(errors["TTNet"] < errors[b])) for b in BASELINES})
        row["TTNet_LS win vs small data"] = float(np.mean(errors["TTNet_LS"] < errors["small data"]))
        zero_shot.append(row)
        print(f"seed {seed} {task:<10} " + "  ".join(f"{m} {row[m]:.4f}" for m in (*METHODS, MIXTURE)), flush=True)
    out: dict[str, Any] = {"seed": seed, "zero_shot": zero_shot, "wall_s": round(wall, 1), "load_before": load_before,
                           "stages_s": {k: round(v, 1) for k, v in exp.seconds.items()},
                           "n_models": int(exp.models.full.shape[0] + exp.models.subsets[:, :, 0].numel()),
                           "crowd_spearman": None}
    from workbench.crowd import recovery

    out["crowd_spearman"] = round(recovery(exp.crowd.aggregate, exp.crowd.truth).spearman, 3)
    if with_left_out:
        start = time.perf_counter()
        left = validate_on_known(exp.models, exp.crowd, exp.data, config, split="test")
        out["left_out"] = [{"seed": seed, "task": t, **{k: float(v) for k, v in r.items()}}
                           for t, r in left.iterrows()]
        out["left_out_s"] = round(time.perf_counter() - start, 1)
        for t, r in left.iterrows():
            print(f"seed {seed} left out {t:<12} TTNet {r['TTNet']:.4f}  Γ-avg {r['Γ-weighted average']:.4f}", flush=True)
    if with_table:
        start = time.perf_counter()
        table = source_count_table(exp, sizes=(2, 4, len(family.known)), per_size=2)
        out["source_table"] = json.loads(table.to_json(orient="records", force_ascii=False))
        out["source_table_s"] = round(time.perf_counter() - start, 1)
        print(table.to_string(), flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------
def markdown(info: dict, settings: dict, spd: list | None, runs: list[dict]) -> str:
    lines = ["# TTNet benchmark", "",
             f"`benchmarks/bench_ttnet.py`, {info['date_utc']}. Machine: {info['cpus_usable']} usable CPUs "
             f"({info['cpu']}), torch {info['versions'].get('torch')}, Python {info['python']}, one torch thread. "
             f"Load average at start: {info['load_average_at_start']} (a shared machine).", "",
             f"Settings: {json.dumps(settings, ensure_ascii=False)}", ""]
    if spd:
        lines += ["## Training many small models at once", "",
                  "| implementation | models | batch | ms per step (median) | ms per model-step | load |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['implementation']} | {r['models']} | {r['batch']} | {r['ms_per_step_median']} | "
                  f"{r['ms_per_model_step']} | {r['load']} |" for r in spd]
        lines.append("")
    if runs:
        lines += ["## Zero-shot tasks: test mean squared error per method", "",
                  "Lower is better. *TTNet win* = share of the test images on which TTNet's error is lower than the "
                  "Γ-weighted average's / the most correlated copy's; *LS win* = TTNet_LS vs small data.", "",
                  (f"*{MIXTURE}*: the sources' full models mixed with per-tensor weights fitted on the task's "
                   "labelled training images (workbench.methods.ttnet.fit_mixture): not zero-shot, but the best a "
                   "perfect prediction of F's mixture weights could reach."), "",
                  "| seed | task | " + " | ".join(METHODS) + f" | {MIXTURE} | TTNet win vs Γ-avg | vs most corr. | "
                  + "LS win vs small |",
                  "|---:|---|" + "---:|" * len(METHODS) + "---:|---:|---:|---:|"]
        for run in runs:
            for r in run["zero_shot"]:
                best = min(r[m] for m in METHODS if m not in ("oracle", "TTNet_LS"))
                cells = [f"**{r[m]:.4f}**" if r[m] == best else f"{r[m]:.4f}" for m in METHODS]
                lines.append(f"| {r['seed']} | {r['task']} | " + " | ".join(cells) + f" | {r[MIXTURE]:.4f}" +
                             f" | {100 * r['TTNet win vs Γ-weighted average']:.0f}% | "
                             f"{100 * r['TTNet win vs most correlated']:.0f}% | "
                             f"{100 * r['TTNet_LS win vs small data']:.0f}% |")
        lines += ["", "Bold: the lowest error among the methods without target labels and *small data* (oracle and "
                  "TTNet_LS excluded).", ""]
        wins = [(r["TTNet"] < r["Γ-weighted average"]) for run in runs for r in run["zero_shot"]]
        ls = [(r["TTNet_LS"] < r["small data"]) for run in runs for r in run["zero_shot"]]
        room = float(np.exp(np.mean([np.log(r[MIXTURE] / r["Γ-weighted average"]) for run in runs
                                     for r in run["zero_shot"]])))
        lines += [f"TTNet below the Γ-weighted average (mean error): {sum(wins)} of {len(wins)} (task, seed) cases. "
                  f"TTNet_LS below small data: {sum(ls)} of {len(ls)}. The label-fitted mixture's error is "
                  f"{room:.2f}x the Γ-weighted average's (geometric mean): the room a better F would have.", ""]
        left = [r for run in runs for r in run.get("left_out", [])]
        if left:
            lines += ["## Known tasks held out from F in turn (leave-one-out), test mean squared error", "",
                      "| seed | task | TTNet | most correlated | Γ-weighted average | TTNet win vs Γ-avg |",
                      "|---:|---|---:|---:|---:|---:|"]
            lines += [f"| {r['seed']} | {r['task']} | {r['TTNet']:.4f} | {r['most correlated']:.4f} | "
                      f"{r['Γ-weighted average']:.4f} | {r['win % vs Γ-weighted average']:.0f}% |" for r in left]
            n_win = sum(r["TTNet"] < r["Γ-weighted average"] for r in left)
            ratio = float(np.exp(np.mean([np.log(r["TTNet"] / r["Γ-weighted average"]) for r in left])))
            lines += ["", f"TTNet below the Γ-weighted average: {n_win} of {len(left)}; geometric mean of the error "
                      f"ratio TTNet / Γ-weighted average {ratio:.3f}.", ""]
        for run in runs:
            if "source_table" in run:
                table = run["source_table"]
                keys = [k for k in table[0] if k not in ("seconds",) and not k.startswith("MSE")]
                lines += [f"## Win rate (%) vs the Γ-weighted average by number of source tasks (seed {run['seed']})",
                          "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in table]
                lines += ["", f"({run['source_table_s']} s for {len(table)} TTNets.)", ""]
        lines += ["## Wall time per seed (one torch thread)", "",
                  "| seed | models trained | task models | affinity | crowd | TTNet fit | evaluation | total | "
                  "leave-one-out (7 fits) | crowd Spearman | load before |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for run in runs:
            s = run["stages_s"]
            lines.append(f"| {run['seed']} | {run['n_models']} | {s['task models']} s | {s['affinity']} s | "
                         f"{s['crowd']} s | {s['TTNet']} s | {s['evaluation']} s | {run['wall_s']} s | "
                         f"{run.get('left_out_s', '–')} s | {run['crowd_spearman']} | {run['load_before']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seed 0 at a small size; prints only unless --save")
    parser.add_argument("--save", action="store_true", help="write the results (the default for a full run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2 3 4; quick 0)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS / "ttnet",
                        help="path stem of the .json and .md results (default: benchmarks/results/ttnet)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("WORKBENCH_REPORT", "1")  # no progress bars in the log

    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    family_kw: dict[str, Any] = ({"n_train": 256, "n_subsets": 2, "n_val": 64, "n_test": 128, "steps": 120,
                                  "finetune_steps": 20} if args.quick else {})
    ttnet_kw: dict[str, Any] = {"self_steps": 20, "transfer_steps": 100} if args.quick else {}
    settings = {"quick": args.quick, "seeds": seeds, "family": {**TaskFamilyConfig().__dict__, **family_kw},
                "ttnet": {**TTNetConfig().__dict__, **ttnet_kw}}
    settings["family"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings["family"].items()}
    info = machine_info(("numpy", "torch", "scipy"))
    print(f"{info['cpus_usable']} CPUs ({info['cpu']}), load {info['load_average_at_start']}", flush=True)
    spd = None if args.skip_speed else speed(steps=5 if args.quick else 20)
    runs = [one_seed(s, family_kw, ttnet_kw, with_left_out=True, with_table=(s == seeds[0]))
            for s in seeds]
    if args.save or not args.quick:
        save_results(args.output, {"benchmark": "ttnet", "machine": info, "settings": settings, "speed": spd,
                                   "runs": runs}, markdown(info, settings, spd, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
