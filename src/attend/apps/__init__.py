"""Application pipelines built on attend's runtimes and explanations: support, monitor, recommend, focus.

Each app is a subpackage with its library functions, its HTTP router and its CLI module, which
offers ``register_cli(verbs)`` (its ``attend`` verbs), ``add_serve_options(parser)`` and
``serve_routers(args)`` (what it adds to ``attend serve``). :data:`APPS` names those CLI modules;
the ``attend`` command plugs each in, so a new app never edits the service or the command.
"""

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

APPS = ("attend.apps.focus.cli", "attend.apps.monitor.cli", "attend.apps.recommend.cli", "attend.apps.support.cli")


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:  # fmt: skip
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562) that import each name's module on first use.

    ``exports`` maps a module to the names the package re-exports from it. An app's package then
    costs nothing to import (but for a module that shares a name it exports, imported at once), so
    ``attend --help`` (which imports every app's CLI module, inside its package) does not load
    torch for a list of verbs.
    """
    owner = {name: module for module, names in exports.items() for name in names}
    for name, module in owner.items():
        # A name that is also its module's own name (``monitor.detect`` in ``monitor/detect.py``) is bound
        # now: importing that submodule, as any other lazy name may, would bind the package attribute
        # to the module, and __getattr__ would never be asked for the function.
        if module.rpartition(".")[2] == name:
            setattr(sys.modules[package], name, getattr(importlib.import_module(module), name))

    def __getattr__(name: str) -> Any:
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(owner[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(owner))

    return __getattr__, __dir__


def run_app_cli(verb: str, register_cli: Callable[[Any], Any], argv: Sequence[str] | None = None) -> int:
    """``python -m attend.apps.<app> COMMAND ...``: the app's ``attend <verb>`` with ``attend``'s error
    handling (input a user can fix: one ``error:`` line, exit 2; Ctrl-C: exit 130)."""
    parser = argparse.ArgumentParser(prog="attend")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    register_cli(verbs)
    args = parser.parse_args([verb, *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:  # DataError, SessionError and ModelDirError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        problem = database_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2


def database_problem(exc: BaseException) -> str | None:
    """An app database's error (a read-only file, a full disk, a lock held too long) in the
    database's own words, or None for any other error. Never the statement and its parameters:
    they hold message texts, which must not reach the terminal or a log."""
    if not type(exc).__module__.startswith("sqlalchemy"):
        return None
    reason = str(getattr(exc, "orig", None) or type(exc).__name__)
    hint = " (is the database file, or its folder, read-only?)" if "readonly" in reason.replace("-", "") else ""
    return f"the database refused: {reason}{hint}"
