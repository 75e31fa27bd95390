"""The README documents every verb and option the `attend` command has, and no option it lacks."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from attend.cli import build_parser

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
#: A verb table row: | `attend VERB [SUBVERB] ...options...` | what it does |
ROW = re.compile(r"^\| `attend ([a-z]+)(?: ([a-z]+))?([^`]*)` \|", re.MULTILINE)


def _verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], set[str]]:
    found: dict[tuple[str, ...], set[str]] = {}
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subcommands:
        for name, sub in action.choices.items():
            found |= _verbs(sub, (*prefix, name))
    if prefix and not subcommands:
        found[prefix] = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    return found


def test_every_verb_has_a_row_listing_exactly_its_options() -> None:
    verbs = _verbs(build_parser())
    rows: dict[tuple[str, ...], set[str]] = {}
    for match in ROW.finditer(README):
        verb, sub, rest = match.groups()
        key = (verb, sub) if (verb, sub) in verbs else (verb,)
        if key == (verb,) and sub:
            rest = f" {sub}{rest}"
        rows.setdefault(key, set()).update(re.findall(r"--[a-z0-9][a-z0-9-]*", rest))
    assert sorted(set(verbs) - set(rows)) == [], "verbs without a README row"
    for verb, options in verbs.items():
        documented = rows[verb]
        assert sorted(options - documented) == [], f"`attend {' '.join(verb)}` options missing from the README"
        assert sorted(documented - options) == [], f"the README documents options `attend {' '.join(verb)}` lacks"
