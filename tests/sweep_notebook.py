"""A tiny notebook for the sweep and executor tests: seconds to run, no torch, records two results.

``score`` depends on the seed and the setting in a known way (``offset[setting] + seed / 10``), so a test can
check the summary's means; ``fail_run`` makes one run fail on purpose (while ``fail_marker`` exists);
enough to interrupt it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

OFFSETS = {"a": 1.0, "b": 2.0}


def write_sweep_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Sweep probe\n\nA seconds-long notebook that records results."),
        nbformat.v4.new_code_cell(
            'profile = "smoke"  # [smoke|default|full] size\n'
            "seed = 0  # random seed\n"
            'setting = "a"  # [a|b] which offset\n'
            'fail_run = "none"  # the run that raises, as seed-setting, e.g. 1-b\n'
            'fail_marker = ""  # when given, fail_run raises only while this file exists\n'
            "sleep = 0.0  # seconds to wait in the second cell\n",
            metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os, time\n"
            "from workbench.notebook import in_report, record\n"
            "time.sleep(sleep)\n"
            'if f"{seed}-{setting}" == fail_run and (not fail_marker or os.path.exists(fail_marker)):\n'
            '    raise RuntimeError("boom: deliberate failure")\n'
            f"score = {OFFSETS!r}[setting] + seed / 10\n"
            'record("score", score, headline=True)\n'
            'record("twice", 2 * score)\n'
            'record("per_part", {"left": score, "right": -score})\n'
            'record("kernel_threads", int(os.environ.get("OMP_NUM_THREADS", "0")))\n'
            'record("in_report", int(in_report()))\n'
            'print("all good")'),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path
