"""The ``attend`` command. Thin: every verb parses its arguments and calls a library function.

Errors a user can fix (bad input, missing files) are printed as one ``error:`` line with a
non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from attend import __version__


class UsageError(Exception):
    """A problem with the user's input; printed without a traceback."""


def _cmd_demo(args: argparse.Namespace) -> int:
    from attend.demo import main as demo_main

    return demo_main(seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attend", description="Attention models that show where they focus.")
    parser.add_argument("--version", action="version", version=f"attend {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    demo = verbs.add_parser("demo", help="train a small attention model and show where it looks")
    demo.add_argument("--seed", type=int, default=0, help="seed for every random number generator (default 0)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
