"""HyperTransformer's model-size experiment (paper Figure 3 / Table 4): generate the logits layer only, or all layers.

    python benchmarks/bench_ht_model_size.py                      # 4, 6, 8 channels x logits / all, resumable
    python benchmarks/bench_ht_model_size.py --steps 2000 --quick # a quick look (writes nothing unless --save)

20-way 5-shot Omniglot (the HyperTransformer split: 1150 training classes with random 90°·k rotations, 423 test
classes), CNNs of 4, 6 and 8 channels, ``generate="logits"`` vs ``generate="all"``. Every configuration gets the same
budget: ``--steps`` optimisation steps of 2 episodes each (the CPU recipe: Adam 2e-3, cosine schedule), one torch
thread. Each run keeps a resumable state in ``benchmarks/results/ht_model_size_runs/`` (stop it any time and rerun
the command: finished runs are skipped, unfinished ones continue bitwise where they stopped). Recorded per
configuration: **train accuracy** (on ``--eval-episodes`` fresh episodes of the *training* classes, no rotation
augmentation at evaluation, as the paper's training accuracy) and **test accuracy** (the same number of episodes of
the test classes), each mean ± 95% CI, the validation curve, wall time and episodes/s.

The paper (its Figure 3 and Table 4, 5-shot 20-way Omniglot): for 4 and 6 channels generating all layers beats
generating only the logits layer on both training and test accuracy, and at 8 channels the gap closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, save_results  # noqa: E402

from workbench.data import EpisodeSampler, load_omniglot, omniglot_split  # noqa: E402
from workbench.methods import hypertransformer as ht  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "ht_model_size_runs"
CHANNELS = (4, 6, 8)
GENERATE = ("logits", "all")


def run(channels: int, generate: str, steps: int, eval_episodes: int, seed: int, omniglot: Any,
        runs: Path, force: bool = False) -> dict[str, Any]:
    name = f"{generate}-{channels}ch-{steps}steps-seed{seed}"
    done = runs / f"{name}.json"
    if done.exists() and not force:
        return json.loads(done.read_text())
    runs.mkdir(parents=True, exist_ok=True)
    samplers = ht.omniglot_samplers(20, k_shot=5, seed=seed, omniglot=omniglot)
    cfg = ht.HyperTransformerConfig(n_way=20, channels=channels, generate=generate, steps=steps,
                                    log_every=max(steps // 20, 1), seed=seed)
    state = runs / f"{name}.state.pt"
    print(f"== {name}", flush=True)
    model = ht.HyperTransformer(cfg).fit(samplers["train"], val=samplers["val"], val_episodes=50, show_progress=False,
                                         log=lambda line: print(f"  {line}", flush=True), state_path=state,
                                         resume=state.exists(), save_every_minutes=3.0)
    # training accuracy: fresh 5-shot episodes of the training classes, without the rotation augmentation
    split = omniglot_split("ht")
    train_eval = EpisodeSampler(omniglot.images, omniglot.labels, 20, 5, 5, classes=split["train"], seed=30_000 + seed)
    start = time.perf_counter()
    train_acc = model.evaluate(train_eval, eval_episodes).accuracy
    test_acc = model.evaluate(samplers["test"], eval_episodes).accuracy
    result = {"channels": channels, "generate": generate, "steps": steps, "seed": seed,
              "train_episodes": model.train_episodes_, "train_seconds": round(model.train_seconds_, 1),
              "train_episodes_per_s": round(model.train_episodes_ / max(model.train_seconds_, 1e-9), 1),
              "eval_seconds": round(time.perf_counter() - start, 1),
              "train_accuracy": [round(100 * train_acc.mean, 2), round(100 * train_acc.ci95, 2)],
              "test_accuracy": [round(100 * test_acc.mean, 2), round(100 * test_acc.ci95, 2)],
              "eval_episodes": eval_episodes, "parameters": sum(p.numel() for p in model.parameters()),
              "curve": [{k: r[k] for k in ("episodes", "seconds", "train_accuracy", "val_accuracy")}
                        for r in model.history_.records]}
    done.write_text(json.dumps(result, indent=1) + "\n")
    state.unlink(missing_ok=True)
    print(f"   train {result['train_accuracy']}  test {result['test_accuracy']}", flush=True)
    return result


def markdown(report: dict[str, Any]) -> str:
    lines = ["# HyperTransformer model size: logits only vs all layers generated (20-way 5-shot Omniglot)", "",
             f"Same budget per configuration: {report['steps']} steps x 2 episodes, one torch thread; accuracy on "
             f"{report['eval_episodes']} episodes (mean ± 95% CI). Machine: {report['machine']['cpu']}, load at start "
             f"{report['machine']['load_average_at_start']} (shared machine: wall times are indicative).", "",
             "| channels | generated | train acc % | test acc % | train episodes | train min | parameters |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(report["results"], key=lambda r: (r["channels"], r["generate"])):
        lines.append(f"| {r['channels']} | {r['generate']} | {r['train_accuracy'][0]:.1f} ± {r['train_accuracy'][1]:.1f} | "
                     f"{r['test_accuracy'][0]:.1f} ± {r['test_accuracy'][1]:.1f} | {r['train_episodes']} | "
                     f"{r['train_seconds'] / 60:.0f} | {r['parameters']:,} |")
    lines += ["", "Gap (all − logits), test accuracy points:"]
    by = {(r["channels"], r["generate"]): r for r in report["results"]}
    for c in sorted({r["channels"] for r in report["results"]}):
        if (c, "all") in by and (c, "logits") in by:
            gap = by[(c, "all")]["test_accuracy"][0] - by[(c, "logits")]["test_accuracy"][0]
            gap_train = by[(c, "all")]["train_accuracy"][0] - by[(c, "logits")]["train_accuracy"][0]
            lines.append(f"- {c} channels: test {gap:+.1f}, train {gap_train:+.1f}")
    lines += ["", "Paper (Figure 3, Table 4): all > logits at 4 and 6 channels on train and test; the gap closes at 8."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="optimisation steps (2 episodes each) per config")
    parser.add_argument("--channels", type=int, nargs="+", default=list(CHANNELS))
    parser.add_argument("--generate", nargs="+", default=list(GENERATE), choices=GENERATE)
    parser.add_argument("--eval-episodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="runs into a temporary folder, nothing saved")
    parser.add_argument("--save", action="store_true", help="with --quick: save the results anyway")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = machine_info()
    omniglot = load_omniglot(28)
    runs = RUNS if not args.quick else Path("/tmp/ht_model_size_runs")
    results = [run(c, g, args.steps, args.eval_episodes, args.seed, omniglot, runs, args.force)
               for c in args.channels for g in args.generate]
    report = {"benchmark": "ht_model_size", "steps": args.steps, "eval_episodes": args.eval_episodes,
              "seed": args.seed, "machine": machine, "results": results}
    text = markdown(report)
    print(text)
    if not args.quick or args.save:
        save_results(RESULTS / "ht_model_size", report, text)


if __name__ == "__main__":
    main()
