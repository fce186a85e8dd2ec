"""`workbench sweep`: the grid, a sweep on a LocalCluster and on an explicitly started Dask cluster, resume.

The notebook is the seconds-long probe of ``tests/sweep_notebook.py`` (no torch); its ``score`` is
``offset[setting] + seed / 10``, so the summary's means are known exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import find_chromium, render_in_browser
from sweep_notebook import OFFSETS, write_sweep_notebook

from workbench import sweeps
from workbench.cli import main
from workbench.cluster import default_threads
from workbench.errors import ParameterError
from workbench.reports import external_resources


@pytest.fixture
def probe(tmp_path) -> Path:
    return write_sweep_notebook(tmp_path / "probe.ipynb")


# ------------------------------------------------------------------ the grid (no kernel starts)
def test_grid_is_the_product_of_the_values_in_the_order_given(probe):
    sweep = sweeps.plan_sweep(str(probe), [("seed", "0..2"), ("setting", "a,b")], profile="smoke")
    assert sweep.axes == {"seed": [0, 1, 2], "setting": ["a", "b"], "profile": ["smoke"]}
    assert len(sweep.runs) == 6
    assert sweep.runs[0].key == "seed=0,setting=a" and sweep.runs[-1].key == "seed=2,setting=b"
    assert sweep.runs[1].parameters == {"seed": 0, "setting": "b", "profile": "smoke"}
    assert [sweeps.setting_label(r.parameters, sweep) for r in sweep.runs[:2]] == ["setting=a", "setting=b"]


@pytest.mark.parametrize("pairs,message", [
    ([("seed", "0..x")], "expects an integer"),
    ([("setting", "0..3")], "range of integers"),
    ([("setting", "a,c")], "must be one of a, b"),
    ([("seed", "3..1")], "is empty"),
    ([("seed", "0,,1")], "empty value"),
    ([("seeds", "0..1")], "has no parameter 'seeds'"),
    ([("seed", "0"), ("seed", "1")], "given twice"),
    ([], "at least one -p"),
])
def test_bad_grids_are_clear_errors(probe, pairs, message):
    with pytest.raises(ParameterError, match=message):
        sweeps.plan_sweep(str(probe), pairs)


def test_cli_rejects_a_bad_grid_before_anything_runs(probe, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(probe), "-p", "setting", "a,zzz", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "must be one of a, b" in err and "Traceback" not in err
    assert not out.exists()


def test_mean_ci95_uses_students_t():
    mean, half = sweeps.mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half == pytest.approx(2.7764451 * (2.5 ** 0.5) / 5 ** 0.5, rel=1e-6)
    assert sweeps.mean_ci95([2.0]) == (2.0, None)
    assert sweeps.mean_ci95([]) == (None, None)


# ------------------------------------------------------------------ sweeps that run
def _rows(out: Path) -> dict[str, dict]:
    return {row["key"]: row for row in json.loads((out / "index.json").read_text())}


def _check_sweep(out: Path, *, failed: str | None) -> None:
    """4 run folders with a report each (one failed, if named), the index and an offline summary."""
    rows = _rows(out)
    assert sorted(rows) == ["seed=0,setting=a", "seed=0,setting=b", "seed=1,setting=a", "seed=1,setting=b"]
    for key, row in rows.items():
        if key == failed:
            assert row["status"] == "failed" and "boom: deliberate failure" in row["error"]
            assert (out / key / "probe.failed.html").is_file() and not (out / key / "probe.html").exists()
        else:
            assert row["status"] == "ok", row["error"]
            assert (out / key / "probe.html").is_file() and (out / key / "probe.results.json").is_file()
            seed, setting = row["parameters"]["seed"], row["parameters"]["setting"]
            assert row["results"]["score"]["value"] == pytest.approx(OFFSETS[setting] + seed / 10)
            assert row["results"]["score"]["headline"] is True
            assert row["results"]["in_report"]["value"] == 1  # the kernel knew it was rendering a report
    index = (out / "index.html").read_text()
    assert "score = <b>1.1</b>" in index  # recorded results appear on the index
    summary_page = (out / "summary.html").read_text()
    assert external_resources(summary_page) == [] and "Plotly.newPlot" in summary_page
    summary = {(c["result"], c["setting"]): c for c in json.loads((out / "summary.json").read_text())}
    a = summary[("score", "setting=a")]
    assert a["n"] == 2 and a["mean"] == pytest.approx(1.05) and a["ci95"] > 0
    b = summary[("score", "setting=b")]
    assert b["n"] == (1 if failed == "seed=1,setting=b" else 2)


@pytest.mark.slow
def test_sweep_on_a_local_cluster_fails_one_run_alone_and_resumes(probe, tmp_path, capsys):
    out = tmp_path / "sweep"
    marker = tmp_path / "fail-while-this-exists"
    marker.touch()
    argv = ["sweep", str(probe), "-p", "seed", "0..1", "-p", "setting", "a,b", "-p", "fail_run", "1-b",
            "-p", "fail_marker", str(marker), "--workers", "2", "--output-dir", str(out)]
    assert main(argv) == 1  # one run failed
    _check_sweep(out, failed="seed=1,setting=b")
    rows = _rows(out)
    assert rows["seed=0,setting=a"]["results"]["kernel_threads"]["value"] == default_threads(2)
    assert not [p for p in out.rglob(".probe-*")]  # no temporary folder left anywhere
    finished = {key: (out / key / "probe.html").stat().st_mtime_ns for key in rows if key != "seed=1,setting=b"}

    marker.unlink()  # the failing run now succeeds; the three finished ones must not run again
    capsys.readouterr()
    assert main(argv) == 0
    assert "4 runs, 1 to run, 3 finished earlier" in capsys.readouterr().out
    _check_sweep(out, failed=None)
    rows = _rows(out)
    assert {key for key, row in rows.items() if row["skipped"]} == set(finished)
    assert {key: (out / key / "probe.html").stat().st_mtime_ns for key in finished} == finished
    assert not (out / "seed=1,setting=b" / "probe.failed.html").exists()  # the fixed run cleared its failure

    if find_chromium() is not None:  # the summary draws its figures offline in a real browser
        page = render_in_browser(out / "summary.html")
        assert page.external_requests == [] and 'class="main-svg"' in page.dom


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started (and its children: it leads its own session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)


@pytest.mark.slow
def test_sweep_on_an_explicitly_started_dask_cluster(probe, tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = _start([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--no-dashboard", "--scheduler-file", str(scheduler_file)], tmp_path / "scheduler.log")
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            assert scheduler.poll() is None and time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.5)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = _start([sys.executable, "-m", "dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
                         "--host", "127.0.0.1", "--no-dashboard", "--local-directory", str(tmp_path / "dask")],
                        tmp_path / "worker.log")
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        out = tmp_path / "sweep"
        rc = main(["sweep", str(probe), "-p", "seed", "0..1", "-p", "setting", "a,b", "-p", "fail_run", "1-b",
                   "--scheduler", address, "--output-dir", str(out)])
        assert rc == 1
        _check_sweep(out, failed="seed=1,setting=b")
        # On a cluster it cannot see, a sweep gives each kernel one thread unless told otherwise.
        assert _rows(out)["seed=0,setting=a"]["results"]["kernel_threads"]["value"] == 1
    finally:
        if worker is not None:
            _stop(worker)
        _stop(scheduler)


@pytest.mark.slow  # the client waits out its connection time-out (20 s)
def test_unreachable_scheduler_is_a_clear_error(probe, tmp_path, capsys):
    rc = main(["sweep", str(probe), "-p", "seed", "0..1", "--scheduler", "tcp://127.0.0.1:9",
               "--output-dir", str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err and "Traceback" not in err
