"""Helpers for the typed config dataclasses: strict loading and field checks.

Configs are the API (they serialise to ``config.json``), so they are validated at the boundary
and every error names the field and the bad value: an unknown field, or a value of the wrong
type (``"epochs": "3"``, ``"epochs": 1.5``, ``"num_layers": true``), is an error rather than a
silent coercion or a traceback deep inside training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import json
import math
import numbers
import re
import threading
import types
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

__all__ = [
    "APP_DIRECTORIES",
    "PluginWarning",
    "RepeatedKey",
    "check_arguments",
    "check_pad_id",
    "check_positive",
    "check_type",
    "check_unit_interval",
    "load_plugins",
    "positive_int",
    "read_run_config",
    "redefines",
    "strict_from_dict",
    "unique_keys",
]

#: The entry-point group through which an installed package adds tasks, models, runtimes or routes:
#: each entry names a module, imported (once) when attend meets a name none of its registries holds.
PLUGIN_GROUP = "attend.plugins"
#: Directories attend's applications write, which no model runtime loads, by their config.json task:
#: what runs them (``{path}``: the directory). A support index given to `predict` had been called an
#: outside package's task, and `evaluate` then asked for a plugin.
APP_DIRECTORIES = {
    "attend-support-index": "it is a support index: ask it with `attend support ask {path} QUESTION`, or serve it "
                            "with `attend serve --support-index {path}`",
}
_PLUGINS_LOADED: list[str] = []
_PLUGINS_LOCK = threading.RLock()  # re-entrant: a plugin's import may itself call attend.load

T = TypeVar("T")


def redefines(old: Any, new: Any) -> bool:
    """Whether ``new`` is ``old`` defined again: the same module and qualified name (a notebook cell
    run a second time), which a registry takes in its place rather than refusing the name."""
    return all(getattr(old, key, None) is not None and getattr(old, key, None) == getattr(new, key, None)
               for key in ("__module__", "__qualname__"))  # fmt: skip


class PluginWarning(RuntimeWarning):
    """An installed package's ``attend.plugins`` module failed to import (``attend`` shows it as one
    ``warning:`` line)."""


def load_plugins() -> list[str]:
    """Import the modules installed packages name under the ``attend.plugins`` entry points (once a
    process), so that their decorators register what they add; returns the entries imported.

    A plugin that fails to import is reported as a warning naming it and skipped: one broken package
    must not stop attend's own models from loading.
    """
    with _PLUGINS_LOCK:  # another thread asking meanwhile waits for the imports, not an empty answer
        if _PLUGINS_LOADED:
            return list(_PLUGINS_LOADED[1:])
        import importlib
        import warnings
        from importlib.metadata import entry_points

        _PLUGINS_LOADED.append("")  # marks the search done, even where it finds nothing (and a plugin that asks)
        for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda found: found.name):
            try:
                importlib.import_module(entry.module)  # `pkg.mod:attr [extra]` names module pkg.mod
            except (Exception, SystemExit) as exc:  # a plugin's own failure, reported and skipped (a sys.exit()
                # in it had ended every command, with exit 0 and no word)
                warnings.warn(f"attend plugin {entry.name!r} ({entry.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}", PluginWarning, stacklevel=2)  # fmt: skip
            else:
                _PLUGINS_LOADED.append(entry.name)
        return list(_PLUGINS_LOADED[1:])

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return not args or all(_matches(v, args[0]) for v in value)
    return True  # a type this check does not know: the dataclass's own validation has the last word


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint in _NAMES:
        return _NAMES[hint]
    origin = typing.get_origin(hint) or hint
    if origin in (dict, Mapping):
        return "an object {...}"
    if origin in (list, tuple):
        return "a list"
    return getattr(hint, "__name__", str(hint))


def check_type(name: str, value: Any, hint: Any, *, what: str) -> None:
    """Raise ``ValueError`` naming ``what``'s field ``name`` if ``value`` does not fit the annotation."""
    if not _matches(value, hint):
        raise ValueError(f"{what} field {name}={_as_written(value)} must be {_describe(hint)}")


def _as_written(value: Any) -> str:
    """``value`` as a config file writes it (``true``, ``null``, ``"3"``), not as Python shows it:
    the options come from JSON (``--config``, ``config.json``)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def unknown_names(kind: str, unknown: Sequence[str], known: Iterable[str]) -> str:
    """``unknown KIND ['epochz'] (did you mean 'epochs'?); known: [...]``: the near names first, which
    a reader of a long list of known ones had to find for themselves."""
    known = list(known)
    near = {name: difflib.get_close_matches(name, known, n=1, cutoff=0.75) for name in unknown}
    guesses = [f"{found[0]!r} for {name!r}" if len(unknown) > 1 else repr(found[0]) for name, found in near.items()
               if found]  # fmt: skip
    hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    return f"unknown {kind} {sorted(unknown)}{hint}; known: {known}"


def strict_from_dict(cls: type[T], data: Mapping[str, Any], *, what: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and values of the wrong type raise."""
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(unknown_names(f"{what} field(s)", unknown, sorted(known)))
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        check_type(name, value, hints.get(name, Any), what=what)
    return cls(**data)


def check_arguments(function: Callable[..., Any], options: Mapping[str, Any], *, what: str) -> None:
    """Check keyword ``options`` for ``function``: every name a keyword parameter, every value of its type."""
    parameters = inspect.signature(function).parameters
    hints = typing.get_type_hints(function)
    keywords = {name for name, p in parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(options) - keywords)
    if unknown:
        raise ValueError(unknown_names(f"{what} option(s)", unknown, sorted(keywords - {"self"})))
    for name, value in options.items():
        check_type(name, value, hints.get(name, Any), what=what)


def check_positive(config: object, *names: str) -> None:
    """Raise ``ValueError`` naming the first of ``names`` whose value is not a finite number > 0
    (``nan`` and ``inf`` passed ``<= 0``: a learning rate of inf trained until the loss was nan)."""
    try:  # the field's declared type: lr=0 is a float option given as a whole number ("at least 1" was wrong)
        hints = typing.get_type_hints(type(config))
    except (NameError, TypeError):
        hints = {}
    for name in names:
        value = getattr(config, name)
        declared = hints.get(name)
        whole = isinstance(value, numbers.Integral) and not (declared is float or float in typing.get_args(declared))
        if not value > 0 or (not whole and not math.isfinite(value)):
            raise ValueError(f"{name}={value!r} must be {'at least 1' if whole else 'positive and finite'}")


def check_pad_id(config: object) -> None:
    """Raise ``ValueError`` unless ``config.pad_id`` is a row of its ``vocab_size`` embedding table (-1
    had frozen the last row as padding; the size itself, a bare AssertionError from torch)."""
    pad_id, size = config.pad_id, config.vocab_size  # type: ignore[attr-defined]
    if not 0 <= pad_id < size:
        raise ValueError(f"pad_id={pad_id!r} must be in [0, vocab_size={size})")


def check_unit_interval(config: object, *names: str) -> None:
    """Raise ``ValueError`` for a probability-like field outside ``[0, 1)`` (dropout, ratios)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value!r} must be in [0, 1)")


class RepeatedKey(ValueError):
    """A JSON object that gives one key twice: read as is, the last value would win in silence."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of :func:`json.loads`: the object, or :class:`RepeatedKey` for a key given twice."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RepeatedKey(key)
        seen[key] = value
    return seen


def read_run_config(path: str | None) -> dict[str, Any]:
    """A ``--config`` file: a JSON object with ``model`` and/or ``training`` entries (``{}`` for no file).

    Raises:
        ValueError: no such file, invalid JSON, or another shape (the message names the file).
    """
    if path is None:
        return {}
    try:  # utf-8-sig: a byte-order mark (Windows Notepad's) is no error, as in data files
        config = json.loads(Path(path).read_text(encoding="utf-8-sig"), object_pairs_hook=unique_keys)
    except RepeatedKey as exc:  # the last had won, unsaid
        raise ValueError(f"--config {path}: the key {exc.key!r} is given twice in one object; keep one") from None
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except IsADirectoryError:  # it had been "DIR: Is a directory", naming no flag
        raise ValueError(f"--config {path} is a directory; give a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f'--config {path} must be a JSON object with "model" and/or "training" entries, '
                         f"not a {type(config).__name__}")  # fmt: skip
    unknown = sorted(set(config) - {"model", "training"})
    if unknown:
        raise ValueError(f'--config {path}: unknown entr{"y" if len(unknown) == 1 else "ies"} {unknown}; it takes '
                         '"model" and/or "training"')  # fmt: skip
    for entry, value in config.items():  # null, a list or a string had failed as a TypeError traceback
        if not isinstance(value, dict):
            shown = "null" if value is None else type(value).__name__
            example = '{"epochs": 3}' if entry == "training" else '{"dim": 64}'
            raise ValueError(f'--config {path}: "{entry}" must be a JSON object of options ({example}), '
                             f"not {shown}")  # fmt: skip
    return config


def as_flag(exc: ValueError, names: Collection[str], typed: Mapping[str, str] | None = None) -> ValueError:
    """A Python argument's refusal (``layer=5; this model has 2 layers``) said as the flag that gave
    it (``--layer 5: this model has 2 layers``) where it names one of ``names``; else ``exc`` itself.
    ``typed``: a value as the flag was typed, where the argument's differs (``--weights 1,0`` for
    ``weights=[1.0, 0.0]``)."""
    found = re.match(r"(\w+)=(\[[^\]]*\]|'(?:[^'\\]|\\.)*'|[^\s;:]+)[;:]? (.*)", str(exc), re.DOTALL)
    if found is None or found[1] not in names:
        return exc
    value = found[2][1:-1] if len(found[2]) > 1 and found[2][0] == found[2][-1] == "'" else found[2]  # as typed
    value = (typed or {}).get(found[1], value)
    # the names of ``names`` in its advice too ("give fraction=0.500 at most": "give --fraction 0.500 at most")
    rest = re.sub(rf"\b({'|'.join(map(re.escape, names))})=", lambda m: f"--{m[1].replace('_', '-')} ", found[3])
    return ValueError(f"--{found[1].replace('_', '-')} {value}: {rest}")


@contextlib.contextmanager
def flags_named(names: Collection[str], typed: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run the block, a ValueError it raises said as the flag that gave the value (:func:`as_flag`)."""
    try:
        yield
    except ValueError as exc:
        raise as_flag(exc, names, typed) from None


def _argument_error(message: str) -> Exception:
    import argparse  # the parser's own error type, imported only when a value is refused

    return argparse.ArgumentTypeError(message)


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _argument_error(f"{value!r} is not an integer") from None


def _positive_up_to(value: str, highest: int, noun: str) -> int:
    """A whole number from 1 to ``highest``; past it, "VALUE is not NOUN (1 to HIGHEST)"."""
    number = positive_int(value)
    if number > highest:
        raise _argument_error(f"{value} is not {noun} (1 to {highest})")
    return number


#: Most intra-op threads a flag takes (a huge one had failed with "Overflow when unpacking long long").
MAX_THREADS = 1024
#: Most `attend serve --workers` (each a process holding its own model: a huge number had started
#: processes until the machine choked).
MAX_WORKERS = 64


def thread_count(value: str) -> int:
    """An ``argparse`` type: threads, 0 (the runtime's default) to :data:`MAX_THREADS`."""
    number = _integer(value)
    if not 0 <= number <= MAX_THREADS:
        raise _argument_error(f"{value} is not a thread count (0 to {MAX_THREADS}; 0: the runtime's default)")
    return number


def worker_count(value: str) -> int:
    """An ``argparse`` type: worker processes, 1 to :data:`MAX_WORKERS`."""
    return _positive_up_to(value, MAX_WORKERS, "a number of worker processes")


def port_number(value: str) -> int:
    """An ``argparse`` type: a TCP port, 1 to 65535."""
    return _positive_up_to(value, 65535, "a port")


def count(value: str) -> int:
    """An ``argparse`` type: a whole number of at least 0 (a count where 0 means none or all)."""
    number = _integer(value)
    if number < 0:
        raise _argument_error(f"{value} must be at least 0")
    return number


def share(value: str) -> float:
    """An ``argparse`` type: a share of a whole, in (0, 1]."""
    return _in_unit_interval(value, "a number")


def _in_unit_interval(value: str, noun: str) -> float:
    """A number in (0, 1]; otherwise "VALUE must be NOUN in (0, 1]"."""
    try:
        number = float(value)
    except ValueError:
        raise _argument_error(f"{value!r} is not {noun}") from None
    if not 0 < number <= 1:  # NaN fails too
        raise _argument_error(f"{value} must be {noun} in (0, 1]")
    return number


def positive_int(value: str) -> int:
    """An ``argparse`` type: a whole number of at least 1 (the message names the value otherwise)."""
    number = _integer(value)
    if number < 1:
        raise _argument_error(f"{value} must be at least 1")
    return number


#: Longest wait in milliseconds (`attend serve --max-wait-ms`): a request waits at most a minute for
#: others to share its batch.
MAX_WAIT_MS = 60_000


def wait_ms(value: str) -> float:
    """An ``argparse`` type: a wait in milliseconds, 0 to :data:`MAX_WAIT_MS`."""
    try:
        number = float(value)
    except ValueError:
        raise _argument_error(f"{value!r} is not a number of milliseconds") from None
    if not 0 <= number <= MAX_WAIT_MS:  # NaN fails too
        raise _argument_error(f"{value} is not a wait in milliseconds (0 to {MAX_WAIT_MS:,})")
    return number


def minutes(value: str) -> float:
    """An ``argparse`` type: a positive, finite number of minutes (a time budget; leave the flag out
    for the default, which is none for a named classifier: 0 had meant none for a named model and
    was refused by ``--model auto``)."""
    try:
        number = float(value)
    except ValueError:
        raise _argument_error(f"{value!r} is not a number of minutes") from None
    if not 0 < number < float("inf"):  # NaN fails too
        raise _argument_error(f"{value} must be a number of minutes above 0 (leave the flag out for the default: "
                              "20 for --model auto, 30 for seq2seq, none for a named classifier)")
    return number


def label_threshold(value: str) -> float:
    """An ``argparse`` type: a multi-label model's probability from which a label is chosen, in (0, 1]."""
    return _in_unit_interval(value, "a probability")


def seed_number(value: str) -> int:
    """An ``argparse`` type: a random seed, 0 to 2**32 - 1 (the range numpy takes)."""
    number = _integer(value)
    if not 0 <= number < 2**32:
        raise _argument_error(f"{value} is not a seed (0 to {2**32 - 1})")
    return number


def row_id(value: str) -> int:
    """An ``argparse`` type: a database row id, 1 to 2**63 - 1 (what SQLite's INTEGER holds)."""
    return _positive_up_to(value, 2**63 - 1, "an id")
