"""The `workbench` command: list notebooks, render reports, manage data.

Every user mistake (unknown notebook or parameter, bad value, missing dataset) ends with a one-paragraph
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from workbench.errors import WorkbenchError


def _cmd_list(args: argparse.Namespace) -> int:
    from workbench.reports import describe_notebooks

    for info in describe_notebooks():
        print(f"{info.name}  —  {info.title}")
        if info.purpose:
            print(f"    {info.purpose}")
        for p in info.parameters:
            choices = f" one of {'|'.join(p.choices)}" if p.choices else ""
            help_text = f"  # {p.help}" if p.help else ""
            print(f"    -p {p.name} {p.default!r:<12} ({p.type}{choices}){help_text}")
        print()
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from workbench.reports import run_reports

    if not args.notebooks and not args.all:
        raise WorkbenchError("name at least one notebook (see `workbench list`) or pass --all.")
    if args.notebooks and args.all:
        raise WorkbenchError("pass either notebook names or --all, not both.")
    results = run_reports(
        notebooks=None if args.all else args.notebooks,
        parameters=args.parameters or [],
        profile=args.profile,
        output_dir=Path(args.output_dir),
        workers=args.workers,
        scheduler=args.scheduler,
        threads=args.threads,
    )
    failed = [r for r in results if r.status != "ok"]
    return 1 if failed else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from workbench.sweeps import run_sweep

    output_dir = Path(args.output_dir or Path("sweeps") / Path(args.notebook).stem)
    rows = run_sweep(args.notebook, args.parameters or [], output_dir, profile=args.profile,
                     workers=args.workers, scheduler=args.scheduler, threads=args.threads, force=args.force)
    return 1 if any(row.status != "ok" for row in rows) else 0


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """--workers / --scheduler / --threads, shared by `report` and `sweep`."""
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="run N notebooks at once on a local Dask cluster of N processes")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on an existing Dask cluster instead, e.g. tcp://host:8786")
    parser.add_argument("--threads", type=int, default=None, metavar="K",
                        help="threads per kernel (default: the cores shared out evenly; 1 on --scheduler)")


def _cmd_train(args: argparse.Namespace) -> int:
    from workbench.methods.registry import TRAINERS, get_trainer
    from workbench.paths import checkpoints_dir

    if not args.name:
        for name, (_, description) in sorted(TRAINERS.items()):
            print(f"{name:<24} {description}")
        return 0
    import inspect

    from workbench.errors import ParameterError

    trainer = get_trainer(args.name)
    out = Path(args.output_dir) if args.output_dir else checkpoints_dir()
    options = {"resume": args.resume, "threads": args.threads}
    accepted = inspect.signature(trainer).parameters
    for name, value in options.items():
        if name not in accepted and value not in (None, False):
            raise ParameterError(f"the {args.name} trainer has no --{name} option (it is short; run it again).")
    path = trainer(profile=args.profile, seed=args.seed, output_dir=out,
                   **{k: v for k, v in options.items() if k in accepted and v is not None})
    print(f"checkpoint: {path}")
    return 0


def _cmd_course_list(args: argparse.Namespace) -> int:
    from workbench.course import course_dir, list_lessons

    print(f"lessons in {course_dir()}:")
    for lesson in list_lessons():
        print(f"  {lesson.name:<28} {lesson.title}")
    return 0


def _cmd_course_build(args: argparse.Namespace) -> int:
    from workbench.course import build_lessons

    output = Path(args.output)
    builds = build_lessons(args.lessons, output, progress=True)
    print(f"hand out {output / 'student'}/*.ipynb; solutions in {output / 'solution'}; "
          f"grade with `workbench course grade SUBMISSIONS... --build {output}` ({len(builds)} lessons)")
    return 0


def _cmd_course_grade(args: argparse.Namespace) -> int:
    from workbench.course import grade_submissions, write_grades_csv

    rows = grade_submissions([Path(p) for p in args.submissions], Path(args.build), timeout=args.timeout,
                             progress=True)
    path = write_grades_csv(rows, Path(args.output))
    errors = sum(row.status != "graded" for row in rows)
    print(f"grades: {path} ({len(rows)} submissions, {errors} could not be graded)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Notebook-first workbench for task-aware meta-learning: "
        "list notebooks, render them as offline HTML reports, manage datasets, build and grade course exercises.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_list = sub.add_parser("list", help="every notebook with its title, purpose and parameters")
    p_list.set_defaults(handler=_cmd_list)

    p_report = sub.add_parser(
        "report",
        help="execute notebooks with papermill and write standalone HTML reports",
        description="Execute notebooks (papermill) and convert them to standalone, offline HTML "
        "reports plus an index page. Exit status 1 if any notebook failed.",
    )
    p_report.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                          help="notebook names (e.g. 00_tour) or paths")
    p_report.add_argument("--all", action="store_true", help="every notebook in notebooks/")
    p_report.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append",
                          metavar=("NAME", "VALUE"), help="set a notebook parameter (repeatable)")
    p_report.add_argument("--profile", choices=["smoke", "default", "full"], default=None,
                          help="run size: smoke (seconds), default (minutes), full (paper scale)")
    p_report.add_argument("--output-dir", default="reports", help="where reports go (default: reports)")
    _add_cluster_options(p_report)
    p_report.set_defaults(handler=_cmd_report)

    p_sweep = sub.add_parser(
        "sweep", help="run one notebook over a grid of parameters on Dask: a report per run, an index, a summary",
        description="Run NOTEBOOK for every combination of the given values (e.g. -p seed 0..4 -p dataset a,b) "
        "on Dask distributed: a local cluster by default, an existing one with --scheduler. Each run gets its "
        "own folder and report; DIR/index.html lists the runs, DIR/summary.html shows every recorded result "
        "as mean ± 95% CI over seeds. A rerun skips the runs that succeeded. Exit status 1 if any run failed.")
    p_sweep.add_argument("notebook", metavar="NOTEBOOK", help="notebook name (e.g. 00_tour) or path")
    p_sweep.add_argument("-p", "--parameter", dest="parameters", nargs=2, action="append",
                         metavar=("NAME", "VALUES"),
                         help="values of a parameter: 0..4 (integers 0 to 4), a,b (a list) or one value")
    p_sweep.add_argument("--profile", choices=["smoke", "default", "full"], default=None,
                         help="run size of every run (the same as -p profile VALUE)")
    p_sweep.add_argument("--output-dir", default=None, metavar="DIR",
                         help="where the sweep goes (default: sweeps/NOTEBOOK)")
    p_sweep.add_argument("--force", action="store_true", help="rerun the runs that already succeeded")
    _add_cluster_options(p_sweep)
    p_sweep.set_defaults(handler=_cmd_sweep)

    p_train = sub.add_parser(
        "train", help="re-create a shipped checkpoint (probe, HyperTransformer, ...) reproducibly",
        description="Train one of the small models the notebooks load by default, writing the checkpoint, "
        "its sha256 and training log. Without NAME, list the trainers.")
    p_train.add_argument("name", nargs="?", help="what to train (omit to list)")
    p_train.add_argument("--profile", choices=["smoke", "default", "full"], default="full",
                         help="training size; the shipped checkpoints use 'full' (default)")
    p_train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p_train.add_argument("--output-dir", default=None,
                         help="where to write (default: the package's checkpoints folder)")
    p_train.add_argument("--resume", action="store_true",
                         help="continue an interrupted long run from its saved state (NAME.state.pt)")
    p_train.add_argument("--threads", type=int, default=None,
                         help="torch threads (default: the trainer's, usually 1 so a long run leaves a core free)")
    p_train.set_defaults(handler=_cmd_train)

    p_course = sub.add_parser(
        "course", help="course mode: build exercise notebooks (student/solution/autograder) and grade submissions",
        description="Exercise notebooks with offline autograded checks (otter-grader). Lessons are the "
        "jupytext sources in course/*.py; needs the course extra: pip install -e '.[course]'.")
    course_sub = p_course.add_subparsers(dest="course_command", metavar="COMMAND")
    p_course.set_defaults(handler=lambda args: (p_course.print_help(), 0)[1])
    p_clist = course_sub.add_parser("list", help="the lessons and their titles")
    p_clist.set_defaults(handler=_cmd_course_list)
    p_build = course_sub.add_parser(
        "build", help="build student notebooks, solution notebooks and autograder bundles",
        description="Build each lesson (default: all) into DIR/student (solutions replaced by stubs, hidden tests "
        "removed, no outputs), DIR/solution and DIR/autograder. Fails (exit 2) if a solution does not pass its "
        "own tests.")
    p_build.add_argument("lessons", nargs="*", metavar="LESSON", help="lesson names (see `workbench course list`)")
    p_build.add_argument("--output", default="course-build", help="where to write (default: course-build)")
    p_build.set_defaults(handler=_cmd_course_build)
    p_grade = course_sub.add_parser(
        "grade", help="grade submitted notebooks offline into a CSV",
        description="Grade students' notebooks offline with the autograder bundles of a build: one CSV row per "
        "submission with points per exercise, total, and the failing check's message. A submission that "
        "cannot be graded (not a notebook, unknown lesson, crash, time-out) gets a row saying why.")
    p_grade.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="notebook files (.ipynb)")
    p_grade.add_argument("--output", default="grades.csv", help="CSV to write (default: grades.csv)")
    p_grade.add_argument("--build", default="course-build",
                         help="the folder `workbench course build` wrote (default: course-build)")
    p_grade.add_argument("--timeout", type=float, default=300, help="seconds per submission (default: 300)")
    p_grade.set_defaults(handler=_cmd_course_grade)

    from workbench.data import commands as data_commands

    data_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see workbench.reports.sigterm_as_interrupt)
        print(f"workbench: {exc}" if str(exc) else "workbench: interrupted", file=sys.stderr)
        return 143 if str(exc) == "terminated" else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
