"""What every benchmark records beside its figures: when, on what machine, with which versions, under what load;
and the mean ± std over seeds that their tables print."""

from __future__ import annotations

import itertools
import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(packages: Sequence[str] = ("numpy", "torch")) -> dict[str, Any]:
    """Date, platform, CPU, usable cores, Python, package versions and the load average now."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def mean_std_over_seeds(rows: Sequence[dict[str, Any]], by: Sequence[str],
                        metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per combination of the ``by`` keys (in order of first appearance, first key outermost) with
    ``n_seeds`` and ``[mean, std]`` (1 decimal) of each metric the rows have; combinations without rows are left out."""
    levels = [list(dict.fromkeys(r[k] for r in rows)) for k in by]
    out = []
    for combo in itertools.product(*levels):
        sel = [r for r in rows if all(r[k] == v for k, v in zip(by, combo))]
        if not sel:
            continue
        entry: dict[str, Any] = {**dict(zip(by, combo)), "n_seeds": len(sel)}
        for key in metrics:
            vals = [float(r[key]) for r in sel if key in r]
            if vals:
                mean = sum(vals) / len(vals)
                std = (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5
                entry[key] = [round(mean, 1), round(std, 1)]
        out.append(entry)
    return out


def save_results(stem: Path, payload: dict[str, Any], markdown: str) -> None:
    """Write a benchmark's results: ``stem.json`` (the figures, with the load average at the end of the run added)
    and ``stem.md`` (the human-readable report), creating the folder if needed."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=float) + "\n",
                                         encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
