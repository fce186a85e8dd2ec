"""`workbench report`: parameter validation, failed notebooks, atomic replacement, offline HTML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from workbench import reports
from workbench.cli import main

TOUR = "00_tour"


def _write_notebook(path: Path) -> Path:
    """A tiny notebook (no workbench imports, fast) that fails on demand."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Flaky\n\nA notebook that fails when asked to."),
        nbformat.v4.new_code_cell('fail = False  # raise in the second cell\nprofile = "smoke"  # [smoke|default|full] size',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('if fail:\n    raise RuntimeError("boom: deliberate failure")\nprint("all good")'),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


# ------------------------------------------------------------------ validation before any kernel starts
def test_unknown_parameter_names_notebook_and_lists_valid_ones(tmp_path, capsys):
    rc = main(["report", TOUR, "-p", "epochz", "3", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "00_tour" in err and "'epochz'" in err
    assert "profile" in err and "seed" in err  # the valid parameters are listed
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


@pytest.mark.parametrize("name,value,expected", [
    ("seed", "three", "expects an integer"),
    ("profile", "huge", "must be one of smoke, default, full"),
])
def test_bad_value_is_a_clear_error(tmp_path, capsys, name, value, expected):
    rc = main(["report", TOUR, "-p", name, value, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_notebook_lists_available(capsys):
    assert main(["report", "no_such_notebook"]) == 2
    err = capsys.readouterr().err
    assert "no_such_notebook" in err and TOUR in err


def test_real_cli_prints_no_traceback_for_user_mistakes(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "report", TOUR, "-p", "seed", "x",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "expects an integer" in proc.stderr


def test_parse_value_types():
    p = reports.ParameterInfo("n", 3, "int", "")
    assert reports.parse_value("7", p, "nb") == 7
    assert reports.parse_value("true", reports.ParameterInfo("b", False, "bool", ""), "nb") is True
    assert reports.parse_value("0.25", reports.ParameterInfo("f", 1.0, "float", ""), "nb") == 0.25
    assert reports.parse_value("[1, 2]", reports.ParameterInfo("l", [], "list", ""), "nb") == [1, 2]
    with pytest.raises(reports.ParameterError):
        reports.parse_value("{1: 2}", reports.ParameterInfo("l", [], "list", ""), "nb")


def test_all_applies_a_parameter_where_declared_and_rejects_it_nowhere(tmp_path):
    flaky = reports.inspect_notebook(_write_notebook(tmp_path / "flaky.ipynb"))
    tour = reports.inspect_notebook(reports.resolve_notebooks([TOUR])[0])
    typed = reports.validate_parameters([flaky, tour], [("fail", "yes")], strict=False)
    assert typed == {"flaky": {"fail": True}, "00_tour": {}}
    with pytest.raises(reports.ParameterError, match="no parameter 'nowhere'"):
        reports.validate_parameters([flaky, tour], [("nowhere", "1")], strict=False)
    with pytest.raises(reports.ParameterError, match="notebook 00_tour has no parameter 'fail'"):
        reports.validate_parameters([flaky, tour], [("fail", "yes")], strict=True)


# ------------------------------------------------------------------ failures and atomic replacement
def test_failed_notebook_gets_a_report_and_keeps_the_last_good_one(tmp_path):
    nb = _write_notebook(tmp_path / "flaky.ipynb")
    out = tmp_path / "reports"

    good = reports.run_reports([str(nb)], [], output_dir=out, progress_bar=False)
    assert good[0].status == "ok"
    good_html = (out / "flaky.html").read_bytes()
    assert b"all good" in good_html

    rc = main(["report", str(nb), "-p", "fail", "true", "--output-dir", str(out)])
    assert rc == 1  # non-zero when a notebook failed
    failed_html = (out / "flaky.failed.html").read_text()
    assert "boom: deliberate failure" in failed_html  # the failing cell's error is visible
    assert (out / "flaky.html").read_bytes() == good_html  # the good report survived
    row = {r["name"]: r for r in json.loads((out / "index.json").read_text())}["flaky"]
    assert row["status"] == "failed" and row["last_good_html"] == "flaky.html"
    assert "RuntimeError" in row["error"]
    index = (out / "index.html").read_text()
    assert 'class="failed"' in index and "last good report" in index and "flaky.failed.html" in index

    again = reports.run_reports([str(nb)], [], output_dir=out, progress_bar=False)
    assert again[0].status == "ok"
    assert not (out / "flaky.failed.html").exists()  # a fixed notebook clears its failure


def test_interrupted_conversion_leaves_previous_report_untouched(tmp_path, monkeypatch):
    nb = _write_notebook(tmp_path / "flaky.ipynb")
    out = tmp_path / "reports"
    reports.run_reports([str(nb)], [], output_dir=out, progress_bar=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. the user pressed Ctrl-C during HTML conversion

    monkeypatch.setattr(reports, "notebook_to_html", crash)
    with pytest.raises(KeyboardInterrupt):
        reports.run_reports([str(nb)], [], output_dir=out, progress_bar=False)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # no half-written report, no leftover temporary folder


def test_index_records_run_metadata(smoke_report, report_dir):
    result = smoke_report(TOUR)
    assert result.status == "ok", result.error
    row = {r["name"]: r for r in json.loads((report_dir / "index.json").read_text())}[TOUR]
    assert row["parameters"] == {"profile": "smoke"}
    assert row["git_commit"] and row["started_at"] and row["wall_s"] > 0
    assert {"torch", "plotly", "papermill"} <= set(row["versions"])
    assert f'href="{TOUR}.html"' in (report_dir / "index.html").read_text()


# ------------------------------------------------------------------ offline HTML
def test_report_html_is_standalone(smoke_report, report_dir):
    assert smoke_report(TOUR).status == "ok"
    page = (report_dir / f"{TOUR}.html").read_text()
    assert reports.external_resources(page) == []
    assert page.count("window.Plotly = Plotly") == 1  # plotly.js embedded exactly once
    assert "Plotly.newPlot" in page
    assert "MathJax" in page and "cdnjs" not in page


def test_external_resource_detector_catches_cdn_tags():
    page = '<script src="https://cdn.example/x.js"></script><link rel="stylesheet" href="//cdn.example/y.css">'
    assert len(reports.external_resources(page)) == 2
    assert reports.external_resources('<a href="https://example.org">a link is fine</a>') == []
