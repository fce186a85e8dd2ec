"""Wall time of t-SNE, UMAP and PCA (workbench.viz.project) at 1k, 5k and 20k points x 64 dims.

    python benchmarks/bench_projections.py            # full run, writes benchmarks/results/projections.{json,md}
    python benchmarks/bench_projections.py --quick    # 500 and 1,000 points, prints only (add --save to write)

The data are synthetic and labelled as such: 20 Gaussian clusters of different spreads in 64 dimensions.
Each projection runs uncached (``cache=False``) with the kit's defaults. Besides the wall time the table
shows the CPU time (these machines are shared, so compare both) and how well the map keeps neighbourhoods:
the 10-NN label agreement in the map next to the same number in the input space.

UMAP compiles numba code the first time it runs in a process, and again the first time it meets 4,096 or
more points (it then switches from exact to approximate nearest neighbours, NN-descent). Those one-off
costs are measured separately (``umap_first_fit_s``: 500 and 5,000 points) before the timed runs.

With ``--sklearn-tsne`` the script also times scikit-learn's t-SNE (the alternative to openTSNE) at the
same sizes, which is how the kit's t-SNE backend was chosen; the saved results include it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from machine import machine_info, save_results  # benchmarks/machine.py
from workbench.viz import neighbour_agreement, project
from workbench.viz.projection import METHOD_NAMES

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("numpy", "scipy", "scikit-learn", "openTSNE", "umap-learn", "numba", "pynndescent", "plotly")


@dataclass
class Run:
    method: str
    n_points: int
    n_dims: int
    wall_s: float
    cpu_s: float
    agreement_input: float
    agreement_map: float
    load_before: float


def clustered_data(n: int, dims: int = 64, clusters: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic, labelled: ``clusters`` Gaussian blobs, centres ~N(0, 1) per dimension, spreads 0.5 to 2
    (so clusters overlap a little: about 90% of 10-NN share their label in the input space)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.0, size=(clusters, dims))
    spreads = rng.uniform(0.5, 2.0, size=clusters)
    labels = rng.integers(clusters, size=n)
    return centres[labels] + rng.normal(size=(n, dims)) * spreads[labels, None], labels


def sklearn_tsne(X: np.ndarray, seed: int) -> np.ndarray:
    """scikit-learn's t-SNE with the settings the kit uses for openTSNE (PCA init, perplexity 30)."""
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=30.0, init="pca", random_state=seed, n_jobs=1).fit_transform(X)


def time_one(method: str, X: np.ndarray, labels: np.ndarray, seed: int, input_agreement: float) -> Run:
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    if method == "sklearn-tsne":
        Y = sklearn_tsne(X, seed)
    else:
        Y = project(X, method, seed=seed, cache=False, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(method, len(X), X.shape[1], round(wall, 2), round(cpu, 2), round(input_agreement, 3),
               round(neighbour_agreement(Y, labels), 3), round(load, 2))


def markdown(info: dict, settings: dict, runs: list[Run], umap_first_fit_s: dict[str, float] | None) -> str:
    lines = [
        "# Projection benchmark",
        "",
        f"`benchmarks/bench_projections.py`, {info['date_utc']}. Data: **synthetic**, {settings['clusters']} labelled "
        f"Gaussian clusters in {settings['dims']} dimensions. Each projection uncached, with `workbench.viz.project`'s "
        "defaults (t-SNE: openTSNE, perplexity 30, PCA init, one thread; UMAP: 15 neighbours, min_dist 0.1, "
        "PCA init, seeded so single-threaded; PCA: scikit-learn).",
        "",
        f"Machine: {info['cpus_usable']} usable CPUs ({info['cpu']}), Python {info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
        + f". Load average at start: {info['load_average_at_start']} — the machine is shared, so wall times vary; "
        "CPU time is the steadier number.",
        "",
        "| method | points | wall s | CPU s | 10-NN agreement, input → map | load avg |",
        "|---|---:|---:|---:|---|---:|",
    ]
    names = {**METHOD_NAMES, "tsne": "t-SNE (openTSNE)", "sklearn-tsne": "t-SNE (scikit-learn)"}
    for r in runs:
        name = names.get(r.method, r.method)
        lines.append(f"| {name} | {r.n_points:,} | {r.wall_s:.1f} | {r.cpu_s:.1f} | "
                     f"{r.agreement_input:.3f} → {r.agreement_map:.3f} | {r.load_before:.1f} |")
    if umap_first_fit_s:
        first = ", ".join(f"{s:.1f} s at {int(n):,} points" for n, s in umap_first_fit_s.items())
        lines += ["", f"UMAP's first fits in a process (numba compiling; the 5,000-point one compiles NN-descent): "
                  f"{first}. Not included above."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 and 1,000 points; print only unless --save")
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of points (default 1000 5000 20000)")
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["pca", "tsne", "umap"], choices=["pca", "tsne", "umap"])
    parser.add_argument("--sklearn-tsne", action="store_true", help="also time scikit-learn's t-SNE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help="write the results (the default for a full run)")
    parser.add_argument("--output", type=Path, default=RESULTS / "projections",
                        help="path stem of the .json and .md results (default: benchmarks/results/projections)")
    args = parser.parse_args(argv)

    sizes = args.sizes or ([500, 1000] if args.quick else [1000, 5000, 20000])
    methods = list(args.methods) + (["sklearn-tsne"] if args.sklearn_tsne else [])
    settings = {"sizes": sizes, "dims": args.dims, "clusters": 20, "methods": methods, "seed": args.seed,
                "quick": args.quick}
    info = machine_info(PACKAGES)
    print(f"{info['cpus_usable']} CPUs, load {info['load_average_at_start']}; methods {methods}; sizes {sizes}",
          flush=True)

    umap_first_fit_s: dict[str, float] | None = None
    if "umap" in methods:  # pay numba's compilation once per code path, outside the timed runs
        umap_first_fit_s = {}
        for n in (500, 5000) if max(sizes) >= 4096 else (500,):
            X, _ = clustered_data(n, args.dims, seed=args.seed)
            start = time.perf_counter()
            project(X, "umap", seed=args.seed, cache=False, progress=False)
            umap_first_fit_s[str(n)] = round(time.perf_counter() - start, 2)
            print(f"UMAP first fit at {n} points (numba compiling) {umap_first_fit_s[str(n)]:.1f} s", flush=True)

    runs: list[Run] = []
    print(f"{'method':<14}{'points':>8}{'wall s':>9}{'CPU s':>8}   agreement input → map", flush=True)
    for n in sizes:
        X, labels = clustered_data(n, args.dims, seed=args.seed)
        input_agreement = neighbour_agreement(X, labels)
        for method in methods:
            run = time_one(method, X, labels, args.seed, input_agreement)
            runs.append(run)
            print(f"{run.method:<14}{run.n_points:>8,}{run.wall_s:>9.1f}{run.cpu_s:>8.1f}   "
                  f"{run.agreement_input:.3f} → {run.agreement_map:.3f}", flush=True)

    if args.save or not args.quick:
        save_results(args.output, {"benchmark": "projections", "machine": info, "settings": settings,
                                   "umap_first_fit_s": umap_first_fit_s, "runs": [asdict(r) for r in runs]},
                     markdown(info, settings, runs, umap_first_fit_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
