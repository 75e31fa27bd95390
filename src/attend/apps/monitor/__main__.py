"""``python -m attend.apps.monitor run|alerts|dashboard ...``: ``attend monitor`` without the ``attend`` entry point."""

import sys

from attend.apps.monitor.cli import main

sys.exit(main())
