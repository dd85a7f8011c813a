"""``python -m unimodal_free.data.demo OUTPUT_DIR [...]``: generate the demo data (see build.py)."""

import sys

from unimodal_free.data.demo.build import main

if __name__ == "__main__":
    sys.exit(main())
