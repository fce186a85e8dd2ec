"""HyperTransformer vs ProtoNet vs fine-tuning: 20-way Omniglot test accuracy at 8 channels for a CPU budget.

    python benchmarks/bench_hypertransformer.py --minutes 60            # the issue's budget per config
    python benchmarks/bench_hypertransformer.py --minutes 3 --shots 1   # a quick look (what was run here)

For each number of shots (1, 5; trained separately, as the paper does) and each trained method — HT generating the
logits layer only (``ht-logits``), HT generating all layers (``ht-all``), ProtoNet — train on 20-way episodes of the
1150 training classes (random 90°·k rotations) for ``--minutes`` of wall time on one torch thread (the schedule
follows the time budget; see HyperTransformerConfig.max_minutes), then evaluate on ``--test-episodes`` episodes
of the 423 test classes (the official protocol uses 1,024). ``fine-tune`` trains a fresh logits layer on the
support features of that ProtoNet's CNN (100 Adam steps per episode) and needs no training of its own.

Recorded per config: test accuracy ± 95% CI, training wall time, training and evaluation episodes/s, and the
learning curve (validation accuracy on 50 held-out classes every ``--log-every`` steps). The paper (8 channels,
4M episodes): 87.2 (1-shot), 94.7 (5-shot). Writes results/hypertransformer.{json,md} with the machine info.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, save_results  # noqa: E402

from workbench.data import load_omniglot  # noqa: E402
from workbench.methods import hypertransformer as ht  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PAPER = {1: 87.2, 5: 94.7}
METHODS = ["ht-logits", "ht-all", "protonet"]


def run(method: str, shots: int, minutes: float, test_episodes: int, log_every: int, seed: int, omniglot) -> dict:
    samplers = ht.omniglot_samplers(20, k_shot=shots, seed=seed, omniglot=omniglot)
    cfg = ht.HyperTransformerConfig(n_way=20, channels=8, generate="all" if method == "ht-all" else "logits",
                                    steps=1_000_000, max_minutes=minutes, log_every=log_every, seed=seed)
    model = ht.ProtoNet(cfg) if method == "protonet" else ht.HyperTransformer(cfg)
    model.fit(samplers["train"], val=samplers["val"], val_episodes=40, log=lambda line: print(f"  {line}", flush=True),
              show_progress=False)
    curve = [{k: r[k] for k in ("episodes", "seconds", "train_accuracy", "val_accuracy")} for r in model.history_.records]
    out = {}
    learners = {method: model}
    if method == "protonet":
        learners["fine-tune"] = ht.FineTuneLogits(model)
    for name, learner in learners.items():
        n = test_episodes if name != "fine-tune" else max(test_episodes // 4, 20)
        res = learner.evaluate(samplers["test"], n)
        out[name] = {"shots": shots, "accuracy": round(100 * res.accuracy.mean, 2),
                     "ci95": round(100 * res.accuracy.ci95, 2), "test_episodes": res.accuracy.n,
                     "eval_episodes_per_s": round(res.episodes_per_second, 1),
                     "train_minutes": round(model.train_seconds_ / 60, 2), "train_episodes": model.train_episodes_,
                     "train_episodes_per_s": round(model.train_episodes_ / model.train_seconds_, 1),
                     "curve": curve if name == method else "same training as protonet"}
        print(f"{name:<10} {shots}-shot: {res.accuracy} after {model.train_episodes_} episodes "
              f"({model.train_seconds_ / 60:.1f} min); eval {res.episodes_per_second:.1f} episodes/s", flush=True)
    return out


def markdown(report: dict) -> str:
    lines = ["# HyperTransformer benchmark (20-way Omniglot, 8 channels)", "",
             f"Budget: {report['minutes']} min wall per trained config, one torch thread; "
             f"{report['test_episodes']} test episodes (fine-tune: a quarter). Machine: {report['machine']['cpu']}, "
             f"load at start {report['machine']['load_average_at_start']} (shared machine).", "",
             "| method | shots | test acc % ± 95% CI | paper (4M episodes) | train episodes | train min | train ep/s | eval ep/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        paper = PAPER[r["shots"]] if r["method"].startswith("ht") else "–"
        lines.append(f"| {r['method']} | {r['shots']} | {r['accuracy']:.2f} ± {r['ci95']:.2f} | {paper} | "
                     f"{r['train_episodes']} | {r['train_minutes']} | {r['train_episodes_per_s']} | "
                     f"{r['eval_episodes_per_s']} |")
    lines += ["", "Learning curves (validation accuracy %, 50 held-out classes, by training episodes):", ""]
    for r in report["results"]:
        if isinstance(r["curve"], list) and r["curve"]:
            pts = ", ".join(f"{c['episodes']}: {100 * c['val_accuracy']:.0f}" for c in r["curve"])
            lines.append(f"- {r['method']} {r['shots']}-shot: {pts}")
    lines += ["", report.get("notes", "")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="training wall-time budget per config")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--test-episodes", type=int, default=1024)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--notes", default="", help="free text appended to the markdown")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = machine_info()
    omniglot = load_omniglot(28)
    results, start = [], time.time()
    for shots in args.shots:
        for method in args.methods:
            print(f"== {method}, 20-way {shots}-shot, {args.minutes} min", flush=True)
            for name, r in run(method, shots, args.minutes, args.test_episodes, args.log_every, args.seed,
                               omniglot).items():
                results.append({"method": name, **r})
    report = {"benchmark": "hypertransformer", "minutes": args.minutes, "test_episodes": args.test_episodes,
              "seed": args.seed, "total_minutes": round((time.time() - start) / 60, 1), "machine": machine,
              "paper": PAPER, "results": results, "notes": args.notes}
    text = markdown(report)
    print(text)
    if not args.no_save:
        save_results(RESULTS / "hypertransformer", report, text)


if __name__ == "__main__":
    main()
