"""``python -m unimodal_free.eval``: cross-modal retrieval of a checkpoint (see eval/cli.py)."""

import sys

from unimodal_free.eval.cli import main

sys.exit(main())
