"""Crowd task correlations: Dawid-Skene speed and accuracy against crowd-kit, and recovery of the Taskonomy matrix.

    python benchmarks/bench_crowd.py            # full run, writes benchmarks/results/crowd.{json,md}
    python benchmarks/bench_crowd.py --quick    # one seed, fewer settings, prints only (add --save to write)

**Truth.** The 22 Taskonomy target tasks (231 unordered pairs), with levels -1..2 cut by quartiles from the
measured first-order transfer affinities (``levels_from_affinity``: per-target percentile ranks, symmetrised).
Recovery is Spearman's rho between an aggregate's Γ and those symmetrised real scores ("the true Taskonomy
matrix"), plus exact-level accuracy and mean absolute error against the levels, on the pairs that got votes.
Even the true levels reach only a Spearman of ``ceiling`` (4 levels cannot rank 231 pairs): the table says it.

**Scale.** One simulated crowd of 150 annotators each rating 75% of the pairs (25,950 votes), twice: the
default mix (40% experts, 30% noisy, 10% spammers, 20% biased) and a hostile one (half spammers). Every
aggregator is timed ``--repeats`` times on the same votes (best and median wall time). crowd-kit's time is its
``DawidSkene(n_iter=100, tol=1e-5).fit`` on a prebuilt DataFrame; ours includes encoding the votes.

**Sweeps.** 5 seeds per setting (each seed a new crowd), coverage 30% unless varied: recovery as the number of
annotators grows (5..50, default mix), as the spammer fraction grows (0..60% of 30 annotators, the rest in the
default proportions), and as coverage shrinks (where the ordinal model's 3 parameters per annotator should
beat the 12 of categorical Dawid-Skene).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import machine_info, save_results  # benchmarks/machine.py
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits  # installed with scikit-learn

from workbench.crowd import (
    AGGREGATORS,
    DEFAULT_MIX,
    TaskLevels,
    Votes,
    dawid_skene,
    levels_from_affinity,
    recovery,
    simulate_crowd,
)
from workbench.data import load_taskonomy_affinities

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = list(AGGREGATORS)  # dawid-skene, ordinal dawid-skene, majority vote, mean vote
HOSTILE_MIX = {"expert": 0.2, "noisy": 0.15, "spammer": 0.5, "biased": 0.15}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def truth() -> TaskLevels:
    return levels_from_affinity(load_taskonomy_affinities().affinity)


def ceiling(levels: TaskLevels) -> float:
    upper = np.triu_indices(len(levels.tasks), 1)
    return float(spearmanr(levels.levels[upper], levels.scores[upper]).statistic)


# ----------------------------------------------------------------------------------------------------------
# crowd-kit
# ----------------------------------------------------------------------------------------------------------
def crowdkit_available() -> str | None:
    try:
        from importlib import metadata

        import crowdkit.aggregation  # noqa: F401

        return metadata.version("crowd-kit")
    except ImportError:
        return None


def crowdkit_frame(votes: Votes) -> Any:
    import pandas as pd

    lo, hi = votes.canonical()
    return pd.DataFrame({"task": np.char.add(np.char.add(lo, "|"), hi), "worker": votes.annotator,
                         "label": votes.vote.astype(int)})


def crowdkit_fit(frame: Any) -> Any:
    import warnings

    from crowdkit.aggregation import DawidSkene

    with warnings.catch_warnings():  # crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates
        warnings.simplefilter("ignore")
        return DawidSkene(n_iter=100, tol=1e-5).fit(frame)


# ----------------------------------------------------------------------------------------------------------
# Scale: 25,000+ votes
# ----------------------------------------------------------------------------------------------------------
def timed(fn: Any, repeats: int) -> tuple[Any, list[float]]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def scale(levels: TaskLevels, repeats: int, quick: bool) -> list[dict[str, Any]]:
    rows = []
    n_annotators, coverage = (60, 0.75) if quick else (150, 0.75)
    for mix_name, mix in (("default", DEFAULT_MIX), ("half spammers", HOSTILE_MIX)):
        votes = simulate_crowd(levels.levels, n_annotators=n_annotators, mix=mix, coverage=coverage, seed=0,
                               tasks=levels.tasks)
        print(f"scale, {mix_name} mix: {votes!r}", flush=True)
        entries: list[tuple[str, Any]] = [(name, (lambda f=fn, v=votes: f(v))) for name, fn in AGGREGATORS.items()]
        if crowdkit_available():
            frame = crowdkit_frame(votes)
            entries.append(("crowd-kit DawidSkene", lambda frame=frame: crowdkit_fit(frame)))
        ours = dawid_skene(votes)
        for name, run in entries:
            before = load()
            result, times = timed(run, repeats)
            row: dict[str, Any] = {"mix": mix_name, "method": name, "votes": len(votes), "annotators": n_annotators,
                                   "coverage": coverage, "best_s": round(min(times), 4),
                                   "median_s": round(float(np.median(times)), 4), "repeats": repeats,
                                   "load_before": before}
            if name == "crowd-kit DawidSkene":
                keys = np.char.add(np.char.add(ours.items[:, 0], "|"), ours.items[:, 1])
                post = result.probas_.reindex(index=keys, columns=[-1, 0, 1, 2]).fillna(0.0).to_numpy()
                labels = result.labels_.reindex(keys).to_numpy().astype(int)
                index = {t: n for n, t in enumerate(levels.tasks)}
                i = np.array([index[t] for t in ours.items[:, 0]])
                j = np.array([index[t] for t in ours.items[:, 1]])
                true = levels.levels[i, j]
                rho = spearmanr(np.round(post @ np.array([-1, 0, 1, 2]), 4), levels.scores[i, j]).statistic  # as recovery()
                row.update(accuracy=round(float(np.mean(labels == true)), 4), spearman=round(float(rho), 4),
                           mae=round(float(np.mean(np.abs(post @ np.array([-1, 0, 1, 2]) - true))), 4),
                           n_iter=len(result.loss_history_),
                           label_agreement_with_ours=round(float(np.mean(labels == ours.labels_)), 4),
                           max_posterior_diff_with_ours=round(float(np.abs(post - ours.posteriors_).max()), 4))
            else:
                rec = recovery(result, levels)
                row.update(accuracy=round(rec.accuracy, 4), spearman=round(rec.spearman, 4), mae=round(rec.mae, 4),
                           n_iter=result.n_iter_)
            rows.append(row)
            print(f"  {name:<22} acc {row['accuracy']:.3f}  rho {row['spearman']:.3f}  mae {row['mae']:.3f}  "
                  f"best {row['best_s'] * 1000:8.1f} ms  median {row['median_s'] * 1000:8.1f} ms  "
                  f"iters {row['n_iter']}  (load {before})", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------------
# Sweeps
# ----------------------------------------------------------------------------------------------------------
def spam_mix(fraction: float) -> dict[str, float]:
    rest = {k: v for k, v in DEFAULT_MIX.items() if k != "spammer"}
    total = sum(rest.values())
    return {"spammer": fraction, **{k: (1 - fraction) * v / total for k, v in rest.items()}}


def sweep(levels: TaskLevels, name: str, values: list[Any], settings: Any, seeds: list[int]) -> list[dict[str, Any]]:
    """``settings(value)`` gives simulate_crowd's keyword arguments; returns one row per value and method."""
    rows = []
    for value in values:
        scores: dict[str, list[Any]] = {m: [] for m in METHODS}
        n_votes = []
        for seed in seeds:
            votes = simulate_crowd(levels.levels, seed=seed, tasks=levels.tasks, **settings(value))
            n_votes.append(len(votes))
            for method, fn in AGGREGATORS.items():
                scores[method].append(recovery(fn(votes), levels))
        for method in METHODS:
            recs = scores[method]
            row = {"sweep": name, "value": value, "method": method, "seeds": len(seeds),
                   "votes_mean": round(float(np.mean(n_votes)), 1),
                   "rated_fraction": round(float(np.mean([r.rated / r.pairs for r in recs])), 3)}
            for key in ("spearman", "accuracy", "mae"):
                vals = np.array([getattr(r, key) for r in recs])
                row[key] = [round(float(vals.mean()), 3), round(float(vals.std()), 3)]
            rows.append(row)
        line = "  ".join(f"{m}: rho {r['spearman'][0]:.3f} acc {r['accuracy'][0]:.3f}"
                         for m, r in zip(METHODS, rows[-len(METHODS):]))
        print(f"  {name} = {value}: {line}", flush=True)
    return rows


def run_sweeps(levels: TaskLevels, seeds: list[int]) -> list[dict[str, Any]]:
    rows = sweep(levels, "annotators", [5, 10, 20, 30, 50], lambda n: {"n_annotators": n, "coverage": 0.3}, seeds)
    rows += sweep(levels, "spammer fraction", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                  lambda f: {"n_annotators": 30, "coverage": 0.3, "mix": spam_mix(f)}, seeds)
    rows += sweep(levels, "coverage", [0.05, 0.1, 0.2, 0.3, 0.5], lambda c: {"n_annotators": 30, "coverage": c}, seeds)
    return rows


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------
def markdown(info: dict, settings: dict, scale_rows: list[dict], sweeps: list[dict]) -> str:
    lines = ["# Crowd task correlations benchmark", "",
             (f"`benchmarks/bench_crowd.py{' --quick' if settings['quick'] else ''}`, {info['date_utc']}. Machine: "
             f"{info['cpus_usable']} usable CPUs ({info['cpu']}), numpy {info['versions']['numpy']}, crowd-kit "
             f"{info['versions'].get('crowd-kit')}, Python {info['python']}, one thread. Load average at start: "
             f"{info['load_average_at_start']} (a shared machine; see the load column)."), "",
             (f"Truth: 22 Taskonomy targets, 231 pairs, levels -1..2 by quartiles of the symmetrised per-target "
             f"affinity ranks. Spearman is against those real scores; the true levels themselves reach "
             f"{settings['ceiling']:.3f} (the ceiling for a 4-level answer). Accuracy: exact level (chance 0.25). "
             "MAE: mean |expected level - true level|. Scores are over the pairs that got at least one vote."), ""]
    lines += ["## 25,000+ votes: accuracy and wall time", "",
              "| crowd | method | votes | accuracy | Spearman | MAE | EM iterations | best | median | load |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in scale_rows:
        lines.append(f"| {r['mix']} | {r['method']} | {r['votes']:,} | {r['accuracy']:.3f} | {r['spearman']:.3f} | "
                     f"{r['mae']:.3f} | {r['n_iter'] or '–'} | {r['best_s'] * 1000:.1f} ms | "
                     f"{r['median_s'] * 1000:.1f} ms | {r['load_before']} |")
    per_pair = scale_rows[0]["votes"] / 231
    lines += ["", (f"At {per_pair:.0f} votes per pair every aggregator but the mean is near perfect even with half "
                   "the crowd spamming: this part measures speed and agreement; the sweeps below are where the "
                   "methods differ.")]
    ck = [r for r in scale_rows if r["method"] == "crowd-kit DawidSkene"]
    for r in ck:
        ours = next(o for o in scale_rows if o["mix"] == r["mix"] and o["method"] == "dawid-skene")
        lines.append("")
        lines.append(f"{r['mix']} crowd: crowd-kit and ours agree on {100 * r['label_agreement_with_ours']:.1f}% of "
                     f"labels (largest posterior difference {r['max_posterior_diff_with_ours']:.4f}); ours is "
                     f"{r['best_s'] / ours['best_s']:.0f}x faster (best of {r['repeats']}).")
    lines.append("")
    titles = {"annotators": "Recovery as the number of annotators grows (default mix, coverage 30%)",
              "spammer fraction": "Recovery as the spammer fraction grows (30 annotators, coverage 30%)",
              "coverage": "Recovery as coverage shrinks (30 annotators, default mix)"}
    for name, title in titles.items():
        rows = [r for r in sweeps if r["sweep"] == name]
        if not rows:
            continue
        values = list(dict.fromkeys(r["value"] for r in rows))
        lines += [f"## {title}", "", f"Mean ± std over {rows[0]['seeds']} seeds. Spearman / accuracy.", "",
                  f"| {name} | votes | pairs rated | " + " | ".join(METHODS) + " |",
                  "|---:|---:|---:|" + "---:|" * len(METHODS)]
        for v in values:
            sel = {r["method"]: r for r in rows if r["value"] == v}
            first = sel[METHODS[0]]
            cells = [f"{sel[m]['spearman'][0]:.3f} ± {sel[m]['spearman'][1]:.3f} / {sel[m]['accuracy'][0]:.3f}"
                     for m in METHODS]
            lines.append(f"| {v} | {first['votes_mean']:.0f} | {100 * first['rated_fraction']:.0f}% | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, a 60-annotator scale run; prints only unless --save")
    parser.add_argument("--save", action="store_true", help="write the results (the default for a full run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="sweep seeds (default 0 1 2 3 4; quick 0)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per method at scale (default 5; quick 2)")
    parser.add_argument("--output", type=Path, default=RESULTS / "crowd",
                        help="path stem of the .json and .md results (default: benchmarks/results/crowd)")
    args = parser.parse_args(argv)

    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    repeats = args.repeats or (2 if args.quick else 5)
    levels = truth()
    settings = {"quick": args.quick, "seeds": seeds, "repeats": repeats, "ceiling": round(ceiling(levels), 4),
                "levels": repr(levels), "default_mix": DEFAULT_MIX, "hostile_mix": HOSTILE_MIX}
    info = machine_info(("numpy", "scipy", "crowd-kit", "pandas"))
    print(f"{info['cpus_usable']} CPUs ({info['cpu']}), load {info['load_average_at_start']}; {levels!r}; "
          f"Spearman ceiling {settings['ceiling']:.3f}", flush=True)
    if not crowdkit_available():
        print("crowd-kit is not installed: its rows are left out (pip install 'crowd-kit>=1.4.2,<1.5')", flush=True)

    with threadpool_limits(1):  # a shared 2-core machine; BLAS threads only matter for the ordinal M-step
        scale_rows, sweeps = scale(levels, repeats, args.quick), run_sweeps(levels, seeds)

    if args.save or not args.quick:
        save_results(args.output, {"benchmark": "crowd", "machine": info, "settings": settings, "scale": scale_rows,
                                   "sweeps": sweeps}, markdown(info, settings, scale_rows, sweeps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
