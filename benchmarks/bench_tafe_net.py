"""TAFE-Net: speed at CUB scale, and S/U/H/ZSL on the digit teaching data over seeds.

    python benchmarks/bench_tafe_net.py            # full run, writes benchmarks/results/tafe_net.{json,md}
    python benchmarks/bench_tafe_net.py --quick    # a few steps / one seed, prints only (add --save to write)

**Speed** (data: SYNTHETIC, labelled so: ``synthetic_gzsl("CUB")`` — 11,788 x 2048 features generated from the
real CUB attribute matrix, 200 classes, the real split sizes). The paper's model (three 2048-wide factorized
layers, 2048-wide task embedding network and classifier): seconds per training step on batches of 32 images
paired with every class in the batch (as the official code), extrapolated to an epoch of ceil(7057 / 32) steps
and to the 60-epoch schedule; and scoring throughput — image-class pairs per second when every test image is
scored against all 200 class descriptions (what GZSL inference needs), with 1 and 2 threads.

**Accuracy** (data: real; 5 seeds, each its own unseen classes and splits; epochs chosen on the validation
split, as the module does by default): TAFE-Net, TAFE-Net without the embedding loss (beta = 0), the same-size
non-task-aware baseline (late fusion) and ridge attribute regression, on digits-7seg (with CADA-VAE's numbers
on the same splits from benchmarks/results/cada_vae.json) and on digit-styles (unseen (digit, style) pairs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from machine import machine_info, mean_std_over_seeds, save_results  # benchmarks/machine.py
from workbench.data import load_digit_styles, load_digits_7seg, synthetic_gzsl
from workbench.methods.cada_vae import attribute_regression_baseline
from workbench.methods.tafe_net import TAFENet, TAFENetConfig

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"TAFE-Net": {}, "TAFE-Net, beta = 0": {"beta": 0.0}, "non-task-aware (late fusion)": {"task_aware": False}}
DATASETS = {"digits-7seg": load_digits_7seg, "digit-styles": load_digit_styles}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def speed(quick: bool) -> dict[str, Any]:
    data = synthetic_gzsl("CUB", seed=0)
    cfg = TAFENetConfig(epochs=1, select_epoch=False)
    model = TAFENet(cfg)
    steps = 3 if quick else 10
    out: dict[str, Any] = {"dataset": data.name, "synthetic": True, "steps_timed": steps}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        # one real step builds the model; then time `steps` steps on fresh random batches
        model._fit(data, 0, None, desc="build")
        opt = torch.optim.Adam([*model.prediction_.parameters(), *model.meta_.parameters()], lr=1e-4)
        rng = np.random.default_rng(0)
        train = np.asarray(data.trainval_idx)
        x_all = torch.from_numpy((data.features[train] - model.mean_) / model.std_)
        y_all = torch.from_numpy(data.labels[train])
        classes = torch.unique(y_all)
        model.prediction_.train(), model.meta_.train()
        before = load()
        pairs = 0
        start = time.perf_counter()
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(len(train), 32, replace=False))
            terms = model._loss_terms(x_all[idx], y_all[idx], classes, torch.Generator().manual_seed(0))
            loss = terms["classification"] + cfg.beta * terms["embedding"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            pairs += 32 * len(torch.unique(y_all[idx]))
        per_step = (time.perf_counter() - start) / steps
        steps_per_epoch = math.ceil(len(train) / 32)
        model._eval_mode()
        x = data.features[np.asarray(data.test_unseen_idx)[: (64 if quick else 256)]]
        start = time.perf_counter()
        model.scores(x)
        score_s = time.perf_counter() - start
        out[f"threads_{threads}"] = {
            "s_per_step": round(per_step, 3), "mean_pairs_per_step": round(pairs / steps, 1),
            "s_per_epoch_extrapolated": round(per_step * steps_per_epoch, 1),
            "h_per_60_epochs_extrapolated": round(per_step * steps_per_epoch * 60 / 3600, 2),
            "scoring_pairs_per_s": round(len(x) * data.n_classes / score_s),
            "gzsl_test_scoring_s_extrapolated": round((len(data.test_seen_idx) + len(data.test_unseen_idx))
                                                      * data.n_classes / (len(x) * data.n_classes / score_s), 1),
            "load_before": before, "load_after": load()}
        print(f"  {threads} thread(s): {out[f'threads_{threads}']}", flush=True)
    return out


def accuracy(seeds: list[int], datasets: list[str], quick: bool) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    rows = []
    for name in datasets:
        for seed in seeds:
            data = DATASETS[name](seed=seed)
            rows.append({"dataset": name, "seed": seed, "model": "ridge attribute regression",
                         **attribute_regression_baseline(data).as_percent(), "epochs": None, "seconds": 0.0})
            for model_name, overrides in MODELS.items():
                cfg = TAFENetConfig.small(seed=seed, num_threads=1, **overrides,
                                          **({"epochs": 6, "lr_milestones": (3, 5)} if quick else {}))
                start = time.perf_counter()
                model = TAFENet(cfg).fit(data)
                scores = model.evaluate(data).as_percent()
                rows.append({"dataset": name, "seed": seed, "model": model_name, **scores,
                             "validation_ZSL": model.validation_scores_["ZSL"], "epochs": model.best_epoch_,
                             "seconds": round(time.perf_counter() - start, 1), "load": load()})
                print(f"  {name:<12} seed {seed} {model_name:<30} {scores} epochs {model.best_epoch_}", flush=True)
    return rows


def cada_rows() -> list[dict[str, Any]]:
    """CADA-VAE's test rows on digits-7seg and digit-styles (same seeds, so the same splits) from its benchmark
    results (rows without a dataset are from runs that measured digits-7seg only)."""
    path = RESULTS / "cada_vae.json"
    if not path.exists():
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    return [{"dataset": r.get("dataset", "digits-7seg"), "seed": r["seed"], "model": "CADA-VAE (bench_cada_vae)",
             **{k: r[k] for k in ("S", "U", "H", "ZSL")}}
            for r in old.get("digits_rows") or [] if r["split"] == "test" and r["model"] == "CADA"]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return mean_std_over_seeds(rows, by=("dataset", "model"), metrics=("S", "U", "H", "ZSL"))


def markdown(info: dict, settings: dict, spd: dict | None, summary: list[dict] | None) -> str:
    lines = ["# TAFE-Net benchmark", "",
             f"`benchmarks/bench_tafe_net.py{' --quick' if settings['quick'] else ''}`, {info['date_utc']}. "
             f"Machine: {info['cpus_usable']} usable CPUs ({info['cpu']}), torch {info['versions']['torch']}, "
             f"Python {info['python']}. Load average at start: {info['load_average_at_start']} (a shared machine: "
             "other jobs ran at the same time).", ""]
    if spd:
        lines += ["## Speed at CUB scale (SYNTHETIC features)", "",
                  f"Data: {spd['dataset']} — synthetic features, real CUB attributes and split sizes. The paper's "
                  "sizes (2048-wide), batches of 32 images x every class in the batch, "
                  f"{spd['steps_timed']} timed steps.", "",
                  "| threads | s / step | pairs / step | s / epoch | 60 epochs | scoring pairs / s | GZSL test scoring | load |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for t in (1, 2):
            r = spd[f"threads_{t}"]
            lines.append(f"| {t} | {r['s_per_step']} | {r['mean_pairs_per_step']} | {r['s_per_epoch_extrapolated']} | "
                         f"{r['h_per_60_epochs_extrapolated']} h | {r['scoring_pairs_per_s']:,} | "
                         f"{r['gzsl_test_scoring_s_extrapolated']} s | {r['load_before']} |")
        lines.append("")
    if summary:
        lines += ["## Accuracy on the digit teaching data (real): mean ± std over seeds, %", "",
                  f"Seeds {settings['seeds']}; epochs chosen on validation (S + ZSL) / 2 (`TAFENetConfig.small`). digits-7seg: "
                  "3 unseen digits (ZSL chance 33.3%). digit-styles: 10 unseen (digit, style) pairs (ZSL chance 10%). "
                  "CADA-VAE rows: the same seeds and splits, from `cada_vae.md`.", "",
                  "| dataset | model | S | U | H | ZSL |", "|---|---|---:|---:|---:|---:|"]
        for e in summary:
            lines.append(f"| {e['dataset']} | {e['model']} | " + " | ".join(
                f"{e[k][0]:.1f} ± {e[k][1]:.1f}" for k in ("S", "U", "H", "ZSL")) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps, 6 epochs, seed 0; prints only unless --save")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS / "tafe_net")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    settings = {"quick": args.quick, "seeds": seeds, "datasets": args.datasets}
    info = machine_info(("numpy", "torch"))
    print(f"{info['cpus_usable']} CPUs ({info['cpu']}), load {info['load_average_at_start']}", flush=True)
    spd = None if args.skip_speed else speed(args.quick)
    rows = None if args.skip_accuracy else accuracy(seeds, args.datasets, args.quick)
    if rows is not None and "digits-7seg" in args.datasets:
        rows += [r for r in cada_rows() if r["seed"] in seeds]
    summary = summarise(rows) if rows else None
    for e in summary or []:
        print(f"{e['dataset']:<12} {e['model']:<30} " + "  ".join(f"{k} {e[k][0]:.1f}±{e[k][1]:.1f}"
                                                              for k in ("S", "U", "H", "ZSL")))
    if args.save or not args.quick:
        previous = args.output.with_suffix(".json")
        if (spd is None or rows is None) and previous.exists():  # --skip-*: keep that part of the last results
            old = json.loads(previous.read_text(encoding="utf-8"))
            spd = spd if spd is not None else old.get("speed")
            if rows is None:
                rows, summary = old.get("rows"), old.get("summary")
        save_results(args.output, {"benchmark": "tafe_net", "machine": info, "settings": settings, "speed": spd,
                                   "rows": rows, "summary": summary}, markdown(info, settings, spd, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
