"""`workbench data ...` subcommands (list, verify, import, fetch)."""

from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Add the `data` command group to the top-level `workbench` parser."""
    parser = subparsers.add_parser("data", help="list, verify, import and fetch datasets")
    parser.set_defaults(handler=lambda args: (parser.print_help(), 0)[1])
