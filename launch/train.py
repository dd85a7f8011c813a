#!/usr/bin/env python
"""Train the joint model: `deepspeed launch/train.py --config configs/joint.json [--set key=value ...]`.

Also runs as one process: `python launch/train.py --config configs/tiny.json`.
"""

import sys

from unimodal_free.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
