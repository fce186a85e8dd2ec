"""`workbench data ...` subcommands: list, verify, import, fetch.

    workbench data list                      every dataset: present / missing / partial / corrupt, and where
    workbench data verify NAME [NAME ...]    sizes + sha256 of every file (no NAME: every dataset present)
    workbench data import NAME PATH          copy a downloaded file/folder into the data root, verified first
    workbench data fetch NAME                download from the manifest's URLs, then import (needs a network)

Problems are DataErrors: the CLI prints their message (which says what to do) and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path, PurePosixPath

from workbench import paths
from workbench.errors import DataError


def _data_root_line() -> str:
    source = "$WORKBENCH_DATA" if os.environ.get("WORKBENCH_DATA") else "default; set $WORKBENCH_DATA to change it"
    return f"data root: {paths.data_root()}  ({source})"


def _where(status) -> str:
    """The folder that holds a dataset's files, prefixed by which root it is in."""
    m = status.manifest
    files = m.data_files or m.embedded_files
    folders = {PurePosixPath(f.path).parent for f in files}
    common = Path(os.path.commonpath([str(f) for f in folders])) if folders else Path(".")
    base = paths.data_root() if m.data_files else paths.embedded_dir()
    label = "data root" if m.data_files else "embedded"
    return f"{label}: {base / common}"


def _cmd_list(args: argparse.Namespace) -> int:
    from workbench.data.manifest import load_all_manifests
    from workbench.data.store import dataset_status

    print(_data_root_line())
    print()
    statuses = [dataset_status(m) for m in load_all_manifests()]
    width = max(len(s.manifest.name) for s in statuses) + 2
    print(f"{'DATASET'.ljust(width)}{'STATUS'.ljust(10)}WHERE")
    for status in statuses:
        print(f"{status.manifest.name.ljust(width)}{status.state.ljust(10)}{_where(status)}")
        if status.state != "present":
            for check in status.checks:
                if not check.good:
                    print(" " * width + "  " + check.describe())
            print(" " * width + "  to fix: " + status.fix_hint())
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from workbench.data.manifest import load_all_manifests, load_manifest
    from workbench.data.store import dataset_status, verify_dataset

    if args.names:
        names = args.names
        for name in names:
            load_manifest(name)  # unknown names fail before any hashing
    else:
        names = []
        for m in load_all_manifests():
            if dataset_status(m).state == "missing":
                print(f"{m.name}: not in the data root (skipped; to add it: {m.import_command()})")
            else:
                names.append(m.name)
    failures = []
    for name in names:
        print(f"{name}:")
        try:
            verify_dataset(name, report=print)
        except DataError as exc:
            failures.append(str(exc))
    if failures:
        raise DataError("\n".join(failures))
    print("all verified." if names else "nothing to verify.")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from workbench.data.store import import_dataset

    print(_data_root_line())
    result = import_dataset(args.name, Path(args.path), report=print)
    print(f"imported {result.manifest.name} ({len(result.files)} files).")
    if any(c.state == "unverified" for c in result.files):
        print("note: some files have no known sha256 in the manifest; their content (shapes and counts) was checked.")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from workbench.data.store import fetch_dataset

    print(_data_root_line())
    result = fetch_dataset(args.name, timeout=args.timeout, report=print)
    print(f"fetched and imported {result.manifest.name} ({len(result.files)} files).")
    return 0


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add the `data` command group to the top-level `workbench` parser."""
    parser = subparsers.add_parser(
        "data", help="list, verify, import and fetch datasets",
        description="Datasets are described by manifests (data_manifests/*.yaml). Small ones ship inside the "
                    "package; full benchmarks live in the data root ($WORKBENCH_DATA, default "
                    "~/.cache/workbench/data) and are added with `workbench data import NAME PATH`.")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 0)[1])
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    p = sub.add_parser("list", help="every dataset: present / missing / partial / corrupt, and where")
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser("verify", help="check sizes and sha256 of a dataset's files",
                       description="Hash every file of the named datasets (default: every dataset that is present) "
                                   "and compare with the manifest. Exit status 2 on any mismatch.")
    p.add_argument("names", nargs="*", metavar="NAME", help="dataset names (see `workbench data list`)")
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("import", help="copy downloaded files into the data root after verifying them",
                       description="Copy a downloaded file or folder (e.g. xlsa17/data/AWA2) into the data root. "
                                   "Files are staged, checked (size, sha256, shapes and counts) and only then moved "
                                   "into place; on any mismatch the data root is left unchanged.")
    p.add_argument("name", metavar="NAME", help="dataset name (see `workbench data list`)")
    p.add_argument("path", metavar="PATH", help="the downloaded file or the folder that holds the dataset's files")
    p.set_defaults(handler=_cmd_import)

    p = sub.add_parser("fetch", help="download a dataset from its official URL, then import it",
                       description="Download from the manifest's URLs and import. Without a network this fails "
                                   "with instructions for downloading elsewhere and using `workbench data import`.")
    p.add_argument("name", metavar="NAME", help="dataset name (see `workbench data list`)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the server (default 20)")
    p.set_defaults(handler=_cmd_fetch)
