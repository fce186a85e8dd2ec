"""Run the *released* CADA-VAE code (``../shared/reference/CADA-VAE-PyTorch``) on any GZSL dataset, side by side.

    python benchmarks/reference_cada_vae.py --split-seed 0 --seed 0 --threads 1    # CUB-vgg, GZSL, prints S/U/H

The released code is not part of the workbench and is never imported: it runs unmodified in a subprocess from a
temporary copy, with its ``cpu.patch`` applied (CPU tensors instead of CUDA, the feature width read from the
data), on our dataset written in the xlsa17 layout it reads (:func:`workbench.data.xlsa17.write_xlsa17`: the
same features, attributes and image split that the workbench trains on). It has no seed of its own; the only
thing added is a prelude that seeds torch / numpy / random before its script runs, so runs can be repeated.
It prints one line per classifier epoch; :func:`run_released` returns them all and the figure the script reports
(the last epoch).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "CADA-VAE-PyTorch"
_GZSL_LINE = re.compile(r"^\[(\d+)\.0\]\s+novel=([\d.]+), seen=([\d.]+), h=([\d.]+)")
_ZSL_LINE = re.compile(r"^\[(\d+)\.0\]\s+acc=([\d.]+)")


def reference_available(folder: Path = REFERENCE) -> bool:
    return (folder / "model" / "single_experiment.py").is_file() and (folder / "cpu.patch").is_file()


def run_released(data: Any, *, seed: int = 0, generalized: bool = True, threads: int = 1,
                 folder: Path = REFERENCE, log_path: Path | None = None) -> dict[str, Any]:
    """Train and evaluate the released code on ``data`` (a GZSLDataset named after a benchmark it knows: its
    classifier-epoch table is keyed by "CUB", "SUN", "AWA1", "AWA2"; ``data.benchmark`` picks the row).

    Returns ``{"history": [{"epoch", "S", "U", "H"} or {"epoch", "ZSL"}], "reported": last entry, "seconds"}``.
    """
    from workbench.data.xlsa17 import write_xlsa17

    if not reference_available(folder):
        raise FileNotFoundError(f"the released CADA-VAE code is not at {folder}")
    benchmark = data.benchmark or data.name
    with tempfile.TemporaryDirectory(prefix="released-cada-vae-") as tmp:
        work = Path(tmp)
        shutil.copytree(folder / "model", work / "model")
        for path in (work / "model").iterdir():
            path.chmod(0o644)
        patched = subprocess.run(["patch", "-p1", "-s", "-i", str(folder / "cpu.patch")], cwd=work,
                                 capture_output=True, text=True)
        if patched.returncode != 0:
            raise RuntimeError(f"cpu.patch did not apply: {patched.stdout}{patched.stderr}")
        write_xlsa17(data, work / "data" / benchmark)
        prelude = (f"import random, sys, numpy, torch; random.seed({seed}); numpy.random.seed({seed}); "
                   f"torch.manual_seed({seed}); torch.set_num_threads({threads}); "
                   f"sys.argv = ['single_experiment.py', '--dataset', '{benchmark}', '--num_shots', '0', "
                   f"'--generalized', '{generalized}']; import runpy; "
                   f"runpy.run_path('single_experiment.py', run_name='__main__')")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", prelude], cwd=work / "model", env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if log_path is not None:
            Path(log_path).write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"the released code failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    history = []
    for line in proc.stdout.splitlines():
        if generalized and (m := _GZSL_LINE.match(line.strip())):
            history.append({"epoch": int(m.group(1)) + 1, "U": 100 * float(m.group(2)),
                            "S": 100 * float(m.group(3)), "H": 100 * float(m.group(4))})
        elif not generalized and (m := _ZSL_LINE.match(line.strip())):
            history.append({"epoch": int(m.group(1)) + 1, "ZSL": 100 * float(m.group(2))})
    if not history:
        raise RuntimeError(f"no classifier epochs found in the released code's output:\n{proc.stdout[-2000:]}")
    return {"history": history, "reported": history[-1], "seconds": round(seconds, 1),
            "seed": seed, "generalized": generalized, "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-seed", type=int, default=0, help="CUB-vgg image split seed")
    parser.add_argument("--seed", type=int, default=0, help="torch/numpy seed of the released run")
    parser.add_argument("--zsl", action="store_true", help="ZSL (--generalized False) instead of GZSL")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()
    from workbench.data import load_cub_vgg

    data = load_cub_vgg(split_seed=args.split_seed)
    result = run_released(data, seed=args.seed, generalized=not args.zsl, threads=args.threads,
                          log_path=args.out.with_suffix(".log") if args.out else None)
    result["split_seed"] = args.split_seed
    print(json.dumps(result["reported"]), f"{result['seconds']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
