"""``python -m attend.apps.focus triage|start|ingest|...``: ``attend focus`` without the ``attend`` entry point."""

import sys

from attend.apps.focus.cli import main

sys.exit(main())
