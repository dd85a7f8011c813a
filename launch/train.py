#!/usr/bin/env python
"""Train the joint model: `deepspeed launch/train.py --config configs/joint.json [--set key=value ...]`.

Also runs as one process: `python launch/train.py --config configs/tiny.json`.
`--print-config` prints the resolved config as JSON and exits without training.
"""

import sys

from unimodal_free.cpu_memory import keep_freed_memory

keep_freed_memory()  # before torch is imported: see unimodal_free/cpu_memory.py

from unimodal_free.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
