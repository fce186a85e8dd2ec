"""Course mode: lessons build into student/solution/autograder notebooks, solutions pass, stubs fail helpfully,
and `workbench course grade` turns notebooks into a CSV without ever crashing on a bad submission.

Most checks work on one build of every lesson made without a kernel (``run_tests=False``) and run the notebooks'
otter tests in this process (seconds). The two slow tests start real kernels, as instructors' runs will: the
build that runs a solution against its tests (and fails on a wrong one), and grading.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("otter", reason="course mode needs the course extra: pip install -e '.[course]'")
pytest.importorskip("jupytext")

from workbench.cli import main  # noqa: E402
from workbench.course import (  # noqa: E402
    SOLUTION_MARKERS, build_lessons, course_dir, find_lessons, list_lessons, run_checks_in_process,
)
from workbench.course_checks import STUB_MESSAGE  # noqa: E402

LESSONS = [lesson.name for lesson in list_lessons()]
GRADED_LESSON = "02_cada_vae"  # the lesson the kernel tests use (small, quick to run)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Every lesson built once, without running the solutions in a kernel (the slow test does that)."""
    out = tmp_path_factory.mktemp("course-build")
    return {b.lesson.name: b for b in build_lessons(None, out, run_tests=False)}


def _solution_lines(source: Path) -> list[str]:
    """The code lines of a lesson that only the solution has: inside ``# BEGIN/END SOLUTION`` comments, or ending
    in ``# SOLUTION`` (stripped of the marker), long enough to be distinctive."""
    lines, inside = [], False
    for line in source.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped == "# BEGIN SOLUTION":
            inside = True
        elif stripped == "# END SOLUTION":
            inside = False
        elif inside and len(stripped) > 12 and not stripped.startswith("#"):
            lines.append(stripped)
        elif stripped.endswith("# SOLUTION") and "=" in stripped:
            lines.append(stripped[: -len("# SOLUTION")].strip())
    return lines


def test_lessons_cover_the_methods_with_three_to_six_exercises(built):
    assert len(LESSONS) >= 3
    for name in ("task2vec", "cada_vae", "tafe_net", "hypertransformer", "crowd", "capstone"):
        assert any(name in lesson for lesson in LESSONS), f"no lesson for {name}"
    for name, build in built.items():
        assert 3 <= len(build.points) <= 6, f"{name}: {len(build.points)} autograded exercises"
        assert build.written == len(build.points), f"{name}: every exercise should have one written 'why' question"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_solution_passes_all_its_checks(built, lesson):
    solution = nbformat.read(built[lesson].solution, as_version=4)
    results = run_checks_in_process(solution)
    assert any(r.hidden for r in results), f"{lesson} has no hidden test"
    failed = [f"{r.question} {r.case}: {r.message}" for r in results if not r.passed]
    assert not failed, f"{lesson}: the solution fails {failed}"


@pytest.mark.parametrize("lesson", LESSONS)
def test_student_version_gives_nothing_away(built, lesson):
    build = built[lesson]
    student = nbformat.read(build.student, as_version=4)
    solution = nbformat.read(build.solution, as_version=4)
    text = "\n".join(cell.source for cell in student.cells)
    for marker in SOLUTION_MARKERS:
        assert marker not in text, f"{lesson}: {marker!r} left in the student notebook"
    for line in _solution_lines(build.lesson.path):
        assert line not in text, f"{lesson}: solution code in the student notebook: {line!r}"
    written = [c.source for c in solution.cells if c.cell_type == "markdown"]
    model_answers = [s for s in written if s not in {c.source for c in student.cells}]
    assert len(model_answers) >= build.written, f"{lesson}: model answers of the 'why' questions not removed"
    student_tests = student.metadata["otter"]["tests"]
    assert set(student_tests) == set(build.points)
    cases = [case for test in student_tests.values() for suite in test["suites"] for case in suite["cases"]]
    assert cases and not any(case.get("hidden") for case in cases), f"{lesson}: a hidden test is in the student notebook"
    hidden = [case["code"] for test in solution.metadata["otter"]["tests"].values()
              for suite in test["suites"] for case in suite["cases"] if case.get("hidden")]
    assert hidden and not any(code in json.dumps(student.metadata) or code in text for code in hidden)
    assert not any(cell.get("outputs") for cell in student.cells if cell.cell_type == "code")


@pytest.mark.parametrize("lesson", LESSONS)
def test_stub_checks_fail_with_the_intended_message(built, lesson):
    student = nbformat.read(built[lesson].student, as_version=4)
    results = run_checks_in_process(student, hidden=False)
    for question in built[lesson].points:
        first = next(r for r in results if r.question == question)  # what a student sees first and grades report
        assert not first.passed, f"{lesson} {question}: the stub passes its first check"
        assert STUB_MESSAGE in first.message, f"{lesson} {question}: unhelpful message on the stub: {first.message!r}"


def test_unknown_lesson_is_a_clear_error(capsys):
    assert main(["course", "build", "no_such_lesson", "--output", "/tmp/unused"]) == 2
    err = capsys.readouterr().err
    assert "no lesson named 'no_such_lesson'" in err and LESSONS[0] in err and "Traceback" not in err


def test_grade_without_a_build_is_a_clear_error(tmp_path, capsys):
    assert main(["course", "grade", str(tmp_path / "x.ipynb"), "--build", str(tmp_path / "nothing")]) == 2
    assert "workbench course build" in capsys.readouterr().err


def test_course_list_names_every_lesson(capsys):
    assert main(["course", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LESSONS) and str(course_dir()) in out


def test_lesson_names_resolve_with_or_without_their_number():
    assert find_lessons(["cada_vae"])[0].name == GRADED_LESSON
    assert find_lessons([GRADED_LESSON])[0].name == GRADED_LESSON


def _partial_submission(student: nbformat.NotebookNode, solution_source: Path, tmp: Path) -> Path:
    """The student notebook with only the first exercise answered (its function from the solution)."""
    nb = copy.deepcopy(student)
    answer = next(c for c in nb.cells if c.cell_type == "code" and "otter_answer_cell" in c.metadata.get("tags", []))
    name = re.match(r"def (\w+)", answer.source).group(1)
    body = re.search(rf"(def {name}\(.*?)\n\n\n", solution_source.read_text(), flags=re.S).group(1)
    answer.source = "\n".join(l for l in body.splitlines() if "SOLUTION" not in l)
    path = tmp / "partial.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_build_runs_the_solutions_grades_and_rejects_a_wrong_solution(tmp_path, capsys):
    # 1. A real build (solutions run against their tests in a kernel) succeeds.
    out = tmp_path / "build"
    assert main(["course", "build", GRADED_LESSON, "--output", str(out)]) == 0
    for kind, suffix in (("student", "ipynb"), ("solution", "ipynb"), ("autograder", "zip")):
        assert (out / kind / f"{GRADED_LESSON}.{suffix}").is_file()
    capsys.readouterr()

    # 2. Grading: the solution gets full marks, a half-done notebook partial marks with the failing check's
    #    message, a broken file and a non-notebook get error rows; one CSV row each, no crash.
    student = nbformat.read(out / "student" / f"{GRADED_LESSON}.ipynb", as_version=4)
    partial = _partial_submission(student, find_lessons([GRADED_LESSON])[0].path, tmp_path)
    broken = tmp_path / "broken.ipynb"
    broken.write_text('{"cells": [ this is not json')
    not_notebook = tmp_path / "answers.py"
    not_notebook.write_text("print('hello')\n")
    solution = tmp_path / "solution.ipynb"
    shutil.copyfile(out / "solution" / f"{GRADED_LESSON}.ipynb", solution)
    grades = tmp_path / "grades.csv"
    code = main(["course", "grade", str(solution), str(partial), str(broken), str(not_notebook),
                 "--build", str(out), "--output", str(grades)])
    assert code == 0
    rows = {Path(r["submission"]).name: r for r in csv.DictReader(grades.open())}
    assert len(rows) == 4
    full = rows["solution.ipynb"]
    assert full["status"] == "graded" and full["total"] == full["possible"] != "" and not full["failing_checks"]
    half = rows["partial.ipynb"]
    assert half["status"] == "graded" and 0 < float(half["total"]) < float(half["possible"])
    assert float(half["q1"]) > 0 and float(half["q2"]) == 0
    assert "q2: " in half["failing_checks"] and STUB_MESSAGE in half["failing_checks"]
    assert half["written_answers"] == "0/4"
    for name in ("broken.ipynb", "answers.py"):
        assert rows[name]["status"] == "error" and "not a Jupyter notebook" in rows[name]["error"]
    print(f"grading seconds per submission: solution {full['seconds']}, partial {half['seconds']}")

    # 3. A lesson whose solution is wrong does not build, and the message says which check failed.
    course = tmp_path / "course"
    course.mkdir()
    source = find_lessons([GRADED_LESSON])[0].path.read_text()
    wrong = source.replace("return 0.0 if S + U == 0 else 2.0 * S * U / (S + U)", "return (S + U) / 2")
    assert wrong != source
    (course / "99_wrong.py").write_text(wrong)
    capsys.readouterr()
    code = main_with_course(course, ["course", "build", "99_wrong", "--output", str(tmp_path / "wrong")])
    assert code == 2
    err = capsys.readouterr().err
    assert "99_wrong does not build: its solution fails its own tests" in err and "q4" in err


def main_with_course(course: Path, argv: list[str]) -> int:
    """Run the CLI with ``$WORKBENCH_COURSE`` pointing at another lesson folder."""
    import os

    old = os.environ.get("WORKBENCH_COURSE")
    os.environ["WORKBENCH_COURSE"] = str(course)
    try:
        return main(argv)
    finally:
        if old is None:
            del os.environ["WORKBENCH_COURSE"]
        else:
            os.environ["WORKBENCH_COURSE"] = old


@pytest.mark.slow
def test_solutions_run_in_the_smoke_profile_and_render_as_reports(built, tmp_path):
    """Every lesson follows the notebook contract (one `parameters` cell with profile and seed), so its solution
    runs through `workbench report` like any notebook: one offline HTML report per lesson, every public check
    passing in the executed notebook."""
    from workbench.reports import run_reports

    solutions = [str(built[name].solution) for name in LESSONS]
    results = run_reports(solutions, profile="smoke", output_dir=tmp_path, progress_bar=False)
    assert [r.status for r in results] == ["ok"] * len(LESSONS), [(r.name, r.error[-300:]) for r in results]
    for name in LESSONS:
        assert (tmp_path / f"{name}.html").exists()
        executed = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
        checks = [c for c in executed.cells if c.cell_type == "code" and c.source.startswith("grader.check(")]
        assert len(checks) == len(built[name].points)
        for cell in checks:
            shown = "".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in cell.outputs)
            assert "All test cases passed" in shown, f"{name} {cell.source}: {shown[:300]}"
