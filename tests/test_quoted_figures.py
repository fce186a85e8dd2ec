"""Every mean ± spread figure quoted in the README, the notebooks' text and the method modules' docstrings comes
from a measurement the repository can re-run: a benchmark's saved results (``benchmarks/results/*.md``) or a
shipped checkpoint's recorded metrics (``workbench/checkpoints/*.json``). A figure typed in by hand, or left
behind when a benchmark was re-run with other numbers, fails here with the file and the figure to fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: "97.3 ± 1.0", "81.5 ± 0.5%": a mean and its spread (std over seeds or a 95% CI), as the reports print them.
FIGURE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)")
QUOTING = sorted([REPO / "README.md", *(REPO / "notebooks").glob("*.py"),
                  *(REPO / "workbench" / "methods").glob("*.py")])


def measured_figures() -> set[str]:
    """The figures the measurements print: every "a ± b" in the benchmark results, and each checkpoint's test
    accuracies as mean ± 95% CI in percent (the way the README quotes them)."""
    found = {f"{a} ± {b}" for md in (REPO / "benchmarks" / "results").glob("*.md")
             for a, b in FIGURE.findall(md.read_text())}
    for card in (REPO / "workbench" / "checkpoints").glob("*.json"):
        for metric in json.loads(card.read_text()).get("metrics", {}).values():
            if isinstance(metric, dict) and {"mean", "ci95"} <= set(metric):
                found.add(f"{100 * metric['mean']:.1f} ± {100 * metric['ci95']:.1f}")
    return found


def test_the_figure_pattern_reads_what_the_reports_print():
    assert FIGURE.findall("H 9.8 ± 4.9, ZSL 39.1 ± 10.4 (chance 33.3); 81.5 ± 0.5%") == [
        ("9.8", "4.9"), ("39.1", "10.4"), ("81.5", "0.5")]


@pytest.mark.parametrize("path", QUOTING, ids=lambda p: str(p.relative_to(REPO)))
def test_every_quoted_mean_and_spread_was_measured(path):
    measured = measured_figures()
    quoted = {f"{a} ± {b}" for a, b in FIGURE.findall(path.read_text())}
    unmeasured = sorted(quoted - measured)
    assert not unmeasured, (f"{path.relative_to(REPO)} quotes {unmeasured}, which no file in benchmarks/results/ "
                            "or workbench/checkpoints/ records: re-run the benchmark that measures it and quote "
                            "its output, or drop the figure")
