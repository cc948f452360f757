"""``python -m duron`` runs the command line."""

from __future__ import annotations

import sys

from duron._cli import main

sys.exit(main())
