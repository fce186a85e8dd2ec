"""Recorded results (``S.record``) on the index, `workbench report --workers`, and runs stopped by a signal.

Uses the seconds-long probe notebook of ``tests/sweep_notebook.py`` (no torch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from sweep_notebook import write_sweep_notebook

from workbench import reports
from workbench.errors import ParameterError
from workbench.notebook import MAX_TABLE_CELLS, result_payload


# ------------------------------------------------------------------ what can be recorded
def test_result_payload_numbers_and_small_tables():
    import numpy as np

    assert result_payload("acc", np.float32(0.5), headline=True) == {
        "name": "acc", "kind": "number", "value": 0.5, "headline": True}
    assert result_payload("n", 3)["value"] == 3
    assert result_payload("nan", float("nan"))["value"] is None  # JSON has no NaN
    table = result_payload("t", pd.DataFrame({"S": [0.5, 0.25], "method": ["x", "y"]}, index=["a", "b"]))
    assert table["kind"] == "table"
    assert table["value"] == {"columns": ["S", "method"], "index": ["a", "b"], "data": [[0.5, "x"], [0.25, "y"]]}
    assert result_payload("d", {"left": 1.0})["value"]["index"] == ["left"]


@pytest.mark.parametrize("name,value,message", [
    ("has space", 1, "short name"),
    ("ok", "text", "a number or a small table"),
    ("ok", True, "a number or a small table"),
    ("big", pd.DataFrame({"x": range(MAX_TABLE_CELLS + 1)}), "more than"),
])
def test_result_payload_rejects_what_the_index_cannot_show(name, value, message):
    with pytest.raises(ParameterError, match=message):
        result_payload(name, value)


# ------------------------------------------------------------------ results on the index
def test_recorded_results_are_stored_with_the_report_and_shown_on_the_index(tmp_path):
    nb = write_sweep_notebook(tmp_path / "probe.ipynb")
    out = tmp_path / "reports"
    [result] = reports.run_reports([str(nb)], [("seed", "2")], output_dir=out, progress_bar=False)
    assert result.status == "ok", result.error
    assert result.results["score"] == {"kind": "number", "value": 1.2, "headline": True}
    assert result.results["per_part"]["kind"] == "table"
    # beside the HTML, and inside the executed notebook
    assert json.loads((out / "probe.results.json").read_text())["twice"]["value"] == 2.4
    executed = nbformat.read(out / "probe.ipynb", as_version=4)
    assert executed.metadata["workbench"]["results"]["score"]["value"] == 1.2
    row = {r["name"]: r for r in json.loads((out / "index.json").read_text())}["probe"]
    assert row["results"]["score"]["value"] == 1.2
    index = (out / "index.html").read_text()
    assert "<th>headline</th>" in index and "score = <b>1.2</b>" in index
    assert "twice = <b>2.4</b>" in index.split("<details>")[1]  # non-headline results are folded away
    assert "recorded <code>score</code> = 1.2 (headline)" in (out / "probe.html").read_text()


def test_a_relative_output_dir_works_as_make_report_gives_it(tmp_path, monkeypatch):
    """`make report` passes ``--output-dir reports``: the kernel runs in the notebook's own folder, so every path
    handed to it (its scratch folder, its stderr log) must be absolute, or the run fails before its first cell."""
    nb = write_sweep_notebook(tmp_path / "probe.ipynb")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    [result] = reports.run_reports([str(nb)], [], output_dir=Path("reports"), progress_bar=False)
    assert result.status == "ok", result.error
    assert (work / "reports" / "probe.html").exists() and not list((work / "reports").glob(".probe-*"))


@pytest.mark.slow
def test_report_workers_runs_notebooks_through_the_executor(tmp_path):
    first = write_sweep_notebook(tmp_path / "probe_one.ipynb")
    second = write_sweep_notebook(tmp_path / "probe_two.ipynb")
    out = tmp_path / "reports"
    results = reports.run_reports([str(first), str(second)], [("setting", "b")], output_dir=out,
                                  progress_bar=False, workers=2)
    assert [r.status for r in results] == ["ok", "ok"]
    rows = {r["name"]: r for r in json.loads((out / "index.json").read_text())}
    assert set(rows) == {"probe_one", "probe_two"}
    assert all(row["results"]["score"]["value"] == 2.0 for row in rows.values())
    assert rows["probe_one"]["results"]["kernel_threads"]["value"] == max(1, (os.cpu_count() or 1) // 2)
    assert (out / "probe_one.html").is_file() and (out / "probe_two.html").is_file()


# ------------------------------------------------------------------ stopped runs
def test_stale_temporary_folders_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = reports.socket.gethostname()
    killed = tmp_path / ".probe-deadbeef"
    killed.mkdir()
    (killed / reports.OWNER_FILE).write_text(f"{host} {dead.pid}\n")
    old = tmp_path / ".probe-0ld0ld00"  # made before owner files existed, an hour ago
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    live = tmp_path / ".probe-a1ivea1i"
    live.mkdir()
    (live / reports.OWNER_FILE).write_text(f"{host} {os.getpid()}\n")
    unrelated = tmp_path / ".ipynb_checkpoints"
    unrelated.mkdir()
    removed = reports.remove_stale_scratch(tmp_path, older_than=time.time())
    assert sorted(p.name for p in removed) == [".probe-0ld0ld00", ".probe-deadbeef"]
    assert live.is_dir() and unrelated.is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("signum,rc,line", [(signal.SIGINT, 130, "workbench: interrupted"),
                                            (signal.SIGTERM, 143, "workbench: terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_a_stopped_report_prints_one_line_and_keeps_the_good_report(tmp_path, signum, rc, line):
    nb = write_sweep_notebook(tmp_path / "probe.ipynb")
    out = tmp_path / "reports"
    assert reports.run_reports([str(nb)], [], output_dir=out, progress_bar=False)[0].status == "ok"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "report", str(nb), "-p", "sleep", "120",
                             "--output-dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as in a terminal, even when pytest itself runs in the background (SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob(".probe-*")):  # the run's temporary folder: papermill has started
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        time.sleep(8)  # well inside the sleeping cell (the kernel starts in a few seconds)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    messages = [m for m in err.replace("\r", "\n").splitlines()
                if m.strip() and not m.lstrip().startswith(("Executing", "notebooks"))]
    assert proc.returncode == rc
    assert messages == [line], err[-3000:]  # one line: no ZMQ or KeyboardInterrupt traceback
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no stale folder, good report kept
