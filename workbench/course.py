"""Course mode: exercise notebooks with offline autograded checks, built and graded with otter-grader.

One source per lesson: ``course/NAME.py``, a jupytext percent-format file that JupyterLab opens as a notebook. It
holds the prompts, the solutions and the tests, marked with otter-grader's cells (``# BEGIN QUESTION``,
``# BEGIN SOLUTION``, ``# BEGIN TESTS``, see ``course/README.md``). From it :func:`build_lessons` makes

- ``student/NAME.ipynb``: the notebook to hand out — solutions replaced by ``...`` stubs, hidden tests and model
  answers removed, no outputs; ``grader.check("q1")`` cells run the public checks offline;
- ``solution/NAME.ipynb``: the same notebook with the solutions (and every test in its metadata), for instructors;
- ``autograder/NAME.zip``: otter's autograder bundle (public and hidden tests) that :func:`grade_submissions` uses,

and the build fails when a solution does not pass its own tests (otter assign runs them in a fresh kernel).

Why otter-grader and not nbgrader: otter builds all three from one notebook with one command (``otter assign``),
grades without Docker (``otter run``), stores its tests in the notebook so a student notebook is one
self-contained file, and needs no database or course directory layout. nbgrader would need a gradebook database,
a per-course directory tree and a separate ``generate_feedback`` step for the same result. Both work offline.

Each submission is graded in its own Python process with a time limit, so a notebook that hangs, crashes the
kernel, is not a notebook at all or belongs to no lesson gets an error row and never stops the whole run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from workbench.errors import WorkbenchError
from workbench.paths import lessons_dir

#: What ``otter assign`` is told for every lesson unless the lesson has its own ``# ASSIGNMENT CONFIG`` cell:
#: tests stored in the notebook (one self-contained file per student), no PDFs or export cells (nothing to
#: upload anywhere), and the solutions run against their tests at build time.
ASSIGNMENT_CONFIG = {
    "init_cell": True,
    "check_all_cell": False,
    "export_cell": False,
    "generate": True,
    "run_tests": True,
    "solutions_pdf": False,
    "template_pdf": False,
    "files": [],
}

#: The placeholder otter puts into the student's answer cell of a written ("why") question.
ANSWER_PLACEHOLDER = "_Type your answer here, replacing this text._"
#: Markers that must never reach a student notebook (they would give the solution or a hidden test away).
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "# SOLUTION", "BEGIN TESTS", "TEST CONFIG")
GRADE_TIMEOUT_S = 300


class CourseError(WorkbenchError):
    """A lesson is unknown, does not build, or a solution fails its own tests."""


# ----------------------------------------------------------------------------------------------------------
# Lessons
# ----------------------------------------------------------------------------------------------------------
def course_dir() -> Path:
    """Where the lesson sources live: ``$WORKBENCH_COURSE``, else ``course/`` in the checkout, else the copy shipped
    inside the package (a wheel install, see :func:`workbench.paths.lessons_dir`)."""
    env = os.environ.get("WORKBENCH_COURSE")
    return Path(env).expanduser() if env else lessons_dir()


@dataclass(frozen=True)
class Lesson:
    """One lesson source: ``name`` (the file stem, also the notebook and otter assignment name) and its title."""

    name: str
    path: Path
    title: str


def _title(path: Path) -> str:
    """The first Markdown heading of a percent-format source (``# # Title`` inside a markdown cell)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#\s+#\s+(.+)$", line)
        if match:
            return match.group(1).strip()
    return path.stem


def list_lessons(directory: Path | None = None) -> list[Lesson]:
    """Every lesson in ``directory`` (default :func:`course_dir`), sorted by name (the numbers give the order)."""
    root = directory or course_dir()
    if not root.is_dir():
        raise CourseError(f"there is no lesson folder at {root}; set $WORKBENCH_COURSE to the folder that holds the "
                          "lesson sources (course/*.py).")
    return [Lesson(p.stem, p, _title(p)) for p in sorted(root.glob("[0-9a-z]*.py"))]


def find_lessons(names: Sequence[str] | None = None, directory: Path | None = None) -> list[Lesson]:
    """The lessons named (by stem, or by stem without its number prefix: ``cada_vae`` for ``02_cada_vae``);
    every lesson when ``names`` is empty."""
    lessons = list_lessons(directory)
    if not names:
        return lessons
    by_name = {lesson.name: lesson for lesson in lessons}
    by_name.update({re.sub(r"^\d+_", "", lesson.name): lesson for lesson in lessons})
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise CourseError(f"no lesson named {', '.join(map(repr, unknown))}; the lessons are: "
                          f"{', '.join(lesson.name for lesson in lessons)}.")
    chosen: list[Lesson] = []
    for name in names:
        if by_name[name] not in chosen:
            chosen.append(by_name[name])
    return chosen


def master_notebook(lesson: Lesson):  # -> nbformat.NotebookNode
    """The otter-assign master notebook of a lesson: its percent source read by jupytext, with the python3 kernel
    (otter needs a kernelspec) and the default assignment config prepended unless the lesson has its own."""
    import jupytext
    import nbformat

    nb = jupytext.read(lesson.path, fmt="py:percent")
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata.pop("jupytext", None)
    has_config = any(c.cell_type == "raw" and c.source.lstrip().startswith("# ASSIGNMENT CONFIG") for c in nb.cells)
    if not has_config:
        import yaml

        config = {"name": lesson.name, **ASSIGNMENT_CONFIG}
        nb.cells.insert(0, nbformat.v4.new_raw_cell("# ASSIGNMENT CONFIG\n" + yaml.safe_dump(config, sort_keys=False)))
    return nb


# ----------------------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------------------
@dataclass
class LessonBuild:
    """What :func:`build_lessons` wrote for one lesson, and the points of its autograded questions."""

    lesson: Lesson
    student: Path
    solution: Path
    autograder: Path
    points: dict[str, float]
    written: int  # how many written ("why") answers, graded by hand
    seconds: float


def _require_otter() -> None:
    try:
        import jupytext  # noqa: F401
        import otter  # noqa: F401
    except ImportError as exc:
        raise CourseError(f"course mode needs otter-grader and jupytext ({exc.name} is missing); install them with "
                          "`pip install -e '.[course]'` (or `pip install 'workbench[course]'`).") from None


def _check_student_notebook(student, solution, lesson: Lesson) -> None:
    """The student notebook gives nothing away: no solution/test markers, no hidden test, no outputs."""
    problems = []
    hidden = [case["code"] for test in solution.metadata.get("otter", {}).get("tests", {}).values()
              for suite in test.get("suites", []) for case in suite.get("cases", []) if case.get("hidden")]
    text = "\n".join(c.source for c in student.cells)
    tests_text = json.dumps(student.metadata.get("otter", {}).get("tests", {}))
    for marker in SOLUTION_MARKERS:
        if marker in text:
            problems.append(f"the marker {marker!r} is still in a cell")
    for code in hidden:
        if json.dumps(code)[1:-1] in tests_text or code.strip() in text:
            problems.append(f"a hidden test is visible: {code.strip()[:80]!r}")
    if any(c.get("outputs") for c in student.cells if c.cell_type == "code"):
        problems.append("a cell still has outputs")
    if problems:
        raise CourseError(f"the student version of {lesson.name} gives things away: " + "; ".join(problems) + ".")


def build_lesson(lesson: Lesson, output: Path, *, run_tests: bool = True) -> LessonBuild:
    """Build one lesson into ``output/{student,solution,autograder}``; see :func:`build_lessons`."""
    import nbformat

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"course-{lesson.name}-") as tmp:
        master = Path(tmp) / f"{lesson.name}.ipynb"
        nbformat.write(master_notebook(lesson), master)
        result = Path(tmp) / "dist"
        # In this process (otter's imports cost seconds, once); otter assign runs the solutions against their
        # tests in a fresh kernel, exactly as grading will, and raises RuntimeError with a summary if any fails.
        from otter.assign import main as otter_assign

        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter):
                otter_assign(str(master), str(result), no_pdfs=True, no_run_tests=not run_tests)
        except RuntimeError as exc:
            raise CourseError(f"lesson {lesson.name} does not build: its solution fails its own tests.\n{exc}") from None
        except Exception as exc:  # otter's format errors (a missing END SOLUTION, a test outside a question, ...)
            raise CourseError(f"lesson {lesson.name} does not build: {type(exc).__name__}: {exc}") from None
        zips = sorted((result / "autograder").glob("*-autograder_*.zip"))
        if len(zips) != 1:
            raise CourseError(f"lesson {lesson.name}: otter assign wrote {len(zips)} autograder zips, expected one.")
        student = nbformat.read(result / "student" / master.name, as_version=4)
        solution = nbformat.read(result / "autograder" / master.name, as_version=4)
        _check_student_notebook(student, solution, lesson)
        paths = {}
        for kind, source in (("student", result / "student" / master.name),
                             ("solution", result / "autograder" / master.name),
                             ("autograder", zips[0])):
            target = output / kind / (f"{lesson.name}.zip" if kind == "autograder" else master.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            paths[kind] = target
    points = {name: float(test.get("points", 0) or 0)
              for name, test in solution.metadata.get("otter", {}).get("tests", {}).items()}
    written = sum(1 for c in student.cells if c.cell_type == "markdown" and c.source.strip() == ANSWER_PLACEHOLDER)
    return LessonBuild(lesson, paths["student"], paths["solution"], paths["autograder"], points, written,
                       time.perf_counter() - start)


def build_lessons(names: Sequence[str] | None, output: Path, *, run_tests: bool = True,
                  directory: Path | None = None, progress: bool = False) -> list[LessonBuild]:
    """Build the named lessons (default: all) into ``output``: ``student/``, ``solution/``, ``autograder/`` and
    ``course.json`` (lessons, questions, points). Every lesson is tried; if any fails (a solution that does not
    pass its own tests, a malformed source, a student version that would leak an answer) a :class:`CourseError`
    lists them all at the end, after the good lessons have been written."""
    _require_otter()
    lessons = find_lessons(names, directory)
    output.mkdir(parents=True, exist_ok=True)
    builds, failures = [], []
    for lesson in lessons:
        try:
            build = build_lesson(lesson, output, run_tests=run_tests)
        except CourseError as exc:
            failures.append(str(exc))
            if progress:
                print(f"FAILED {lesson.name}", file=sys.stderr)
            continue
        builds.append(build)
        if progress:
            print(f"built {lesson.name}: {len(build.points)} checked questions, {sum(build.points.values()):g} points, "
                  f"{build.written} written answers ({build.seconds:.0f} s)")
    manifest_path = output / "course.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"lessons": {}}
    for b in builds:
        manifest["lessons"][b.lesson.name] = {
            "title": b.lesson.title, "points": b.points, "written_answers": b.written,
            "student": str(b.student.relative_to(output)), "solution": str(b.solution.relative_to(output)),
            "autograder": str(b.autograder.relative_to(output))}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if failures:
        raise CourseError(f"{len(failures)} of {len(lessons)} lessons failed to build:\n\n" + "\n\n".join(failures))
    return builds


@dataclass(frozen=True)
class CheckResult:
    """One test case of a question, run in-process: passed or not, hidden or public, and the failure message."""

    question: str
    case: str
    hidden: bool
    passed: bool
    message: str


def run_checks_in_process(notebook: Any, tests: dict[str, Any] | None = None,
                          hidden: bool = True) -> list[CheckResult]:
    """Execute a built notebook's code cells in this process and run its otter tests against the result.

    A quick look for authors and for the test suite (a second instead of a kernel start): cells that fail are
    skipped, as otter does when grading, and otter's own cells (``otter.Notebook``, ``grader.check``) are left out.
    ``tests`` defaults to the ones in the notebook's metadata (the solution notebook holds the hidden ones too);
    ``hidden=False`` runs only the public ones. This is not a sandbox: run only notebooks you trust.
    """
    from otter.test_files.ok_test import OKTestFile

    tests = tests if tests is not None else notebook.metadata.get("otter", {}).get("tests", {})
    env: dict[str, Any] = {"__name__": "__main__"}
    with tempfile.TemporaryDirectory(prefix="course-check-") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # the notebook's relative paths (if any) land in a scratch folder
        try:
            for cell in notebook.cells:
                if cell.cell_type != "code" or "otter.Notebook(" in cell.source or "grader.check" in cell.source:
                    continue
                try:
                    exec(compile(cell.source, "<cell>", "exec"), env)
                except Exception:  # an unfinished stub that is called later: grading skips it too
                    pass
            results = []
            for name, spec in tests.items():
                spec = {**spec, "suites": [{**suite, "cases": [c for c in suite["cases"] if hidden or not c.get("hidden")]}
                                           for suite in spec["suites"]]}
                test = OKTestFile.from_metadata(spec, "notebook.ipynb")
                test.run(env)
                for tcr in test.test_case_results:
                    tc = tcr.test_case
                    results.append(CheckResult(name, tc.name, bool(tc.hidden), bool(tcr.passed),
                                               "" if tcr.passed else _failure_message(
                                                   {"message": tcr.message, "test_case": {"hidden": tc.hidden}})))
            return results
        finally:
            os.chdir(cwd)


# ----------------------------------------------------------------------------------------------------------
# Grade
# ----------------------------------------------------------------------------------------------------------
@dataclass
class GradeRow:
    """One submission's grade: ``points``/``possible`` per autograded question, the first failing check's message
    per question (``failures``), how many written answers are filled in, or an ``error`` saying why it could not be
    graded (then ``status`` is ``"error"``)."""

    submission: str
    lesson: str = ""
    status: str = "graded"
    points: dict[str, float] = field(default_factory=dict)
    possible: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    written: str = ""
    error: str = ""
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return float(sum(self.points.values()))

    @property
    def max_total(self) -> float:
        return float(sum(self.possible.values()))


def _failure_message(case_result: dict[str, Any]) -> str:
    """The message of a failed otter test case: the ``AssertionError: ...`` line of its doctest output (what our
    checks say), else the case's ``failure_message``, else the last line of the output."""
    text = case_result.get("message", "")
    errors = re.findall(r"^\s*([A-Za-z_.]*(?:Error|Exception)):?\s?(.*)$", text, flags=re.MULTILINE)
    hidden = "(hidden test) " if case_result.get("test_case", {}).get("hidden") else ""
    if errors:
        kind, message = errors[-1]
        return hidden + (message if kind == "AssertionError" and message else f"{kind}: {message}".rstrip(": "))
    fallback = case_result.get("test_case", {}).get("failure_message") or text.strip().splitlines()[-1:]
    return hidden + (fallback if isinstance(fallback, str) else " ".join(fallback))


def _grade_one(submission: str, autograder: str) -> dict[str, Any]:
    """Grade one notebook with otter (non-containerised) in this process; what the parent process needs, as JSON."""
    from otter.api import grade_submission

    results = grade_submission(submission, autograder, quiet=True)
    out: dict[str, Any] = {"points": {}, "possible": {}, "failures": {}}
    for name, test in results.to_dict().items():
        out["points"][name] = float(test["score"])
        out["possible"][name] = float(test["possible"])
        failed = [c for c in test.get("test_case_results", []) if not c.get("passed")]
        if failed:
            out["failures"][name] = _failure_message(failed[0])
    return out


def _lesson_of(nb: Any, path: Path) -> str:
    """The lesson a student notebook belongs to: otter's assignment name in its metadata, else its file stem."""
    return str(nb.metadata.get("otter", {}).get("assignment_name") or path.stem)


def _written_answers(nb: Any) -> str:
    """``"filled/asked"`` for the written (manual) answers, from the answer cells otter put in the student version."""
    cells = [c for c in nb.cells if c.cell_type == "markdown" and "otter_answer_cell" in c.metadata.get("tags", [])]
    filled = sum(1 for c in cells if c.source.strip() and c.source.strip() != ANSWER_PLACEHOLDER)
    return f"{filled}/{len(cells)}"


def grade_submission(path: Path, build_dir: Path, *, timeout: float = GRADE_TIMEOUT_S) -> GradeRow:
    """Grade one submitted notebook against the autograder bundles in ``build_dir/autograder``; never raises for a
    problem with the submission itself (it becomes the row's ``error``)."""
    import nbformat

    row = GradeRow(submission=str(path))
    start = time.perf_counter()
    try:
        if not path.is_file():
            raise CourseError(f"no such file: {path}")
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # any unreadable file: JSON errors, a .py file, a binary, a wrong schema
            raise CourseError(f"not a Jupyter notebook ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        row.lesson = _lesson_of(nb, path)
        row.written = _written_answers(nb)
        bundle = build_dir / "autograder" / f"{row.lesson}.zip"
        if not bundle.is_file():
            raise CourseError(f"no autograder for lesson {row.lesson!r} in {build_dir / 'autograder'}; build it with "
                              f"`workbench course build {row.lesson} --output {build_dir}`")
        # A child process per submission: a kernel crash, an infinite loop or a broken install in the student's
        # code cannot take down the run, and the time limit is enforced from outside.
        proc = subprocess.run([sys.executable, "-m", "workbench.course", "_grade-one", str(path.resolve()),
                               str(bundle.resolve())], capture_output=True, text=True, timeout=timeout,
                              cwd=tempfile.gettempdir())
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip() and "IPKernelApp" not in l]
            raise CourseError(f"grading failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        row.points, row.possible, row.failures = result["points"], result["possible"], result["failures"]
    except subprocess.TimeoutExpired:
        row.status, row.error = "error", f"grading took longer than {timeout:g} s (an infinite loop?)"
    except CourseError as exc:
        row.status, row.error = "error", str(exc)
    except Exception as exc:  # a bug or an unforeseen file: one error row, never a crash of the whole run
        row.status, row.error = "error", f"{type(exc).__name__}: {exc}"
    row.seconds = time.perf_counter() - start
    return row


def grade_submissions(paths: Sequence[Path], build_dir: Path, *, timeout: float = GRADE_TIMEOUT_S,
                      progress: bool = False) -> list[GradeRow]:
    """Grade every submission (one row each, in order), see :func:`grade_submission`."""
    _require_otter()
    if not (build_dir / "autograder").is_dir():
        raise CourseError(f"{build_dir} holds no autograder bundles; run `workbench course build --output {build_dir}` "
                          "first (or pass --build DIR).")
    rows = []
    for path in paths:
        row = grade_submission(Path(path), build_dir, timeout=timeout)
        rows.append(row)
        if progress:
            what = f"{row.total:g}/{row.max_total:g}" if row.status == "graded" else f"error: {row.error}"
            print(f"{row.submission}: {what} ({row.seconds:.0f} s)")
    return rows


def write_grades_csv(rows: Sequence[GradeRow], path: Path) -> Path:
    """One row per submission: submission, lesson, status, total, possible, one column per question (points),
    written answers filled, the failing checks' messages (``q2: ...; q3: ...``), error, seconds."""
    questions: list[str] = []
    for row in rows:
        questions += [q for q in row.possible if q not in questions]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", "lesson", "status", "total", "possible", *questions, "written_answers",
                         "failing_checks", "error", "seconds"])
        for row in rows:
            graded = row.status == "graded"
            writer.writerow([row.submission, row.lesson, row.status, f"{row.total:g}" if graded else "",
                             f"{row.max_total:g}" if graded else "",
                             *[f"{row.points[q]:g}" if q in row.points else "" for q in questions], row.written,
                             "; ".join(f"{q}: {m}" for q, m in row.failures.items()), row.error, f"{row.seconds:.1f}"])
    return path


if __name__ == "__main__":  # the per-submission grading worker (internal; see grade_submission)
    if len(sys.argv) == 4 and sys.argv[1] == "_grade-one":
        print(json.dumps(_grade_one(sys.argv[2], sys.argv[3])))
        sys.exit(0)
    print("usage: python -m workbench.course _grade-one SUBMISSION AUTOGRADER_ZIP (internal)", file=sys.stderr)
    sys.exit(2)
