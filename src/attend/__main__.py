"""``python -m attend`` runs the CLI (and lets ``torchrun -m attend`` launch it)."""

import sys

from attend.cli import main

sys.exit(main())
