"""The ``fastbp`` command (also ``python -m fastbp``).

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``
(registers the subcommand, its ``--help`` and ``func``) and a ``run(args) -> int``.
Exit codes: 0 success, 2 usage error, 1 any other error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys

from . import __version__, bench


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastbp",
        description="Exact backpropagation gradients of fully connected networks, fast.",
    )
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)
