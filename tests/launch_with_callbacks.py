#!/usr/bin/env python
"""``launch/train.py`` with test callbacks installed (see train_callbacks.py); launched by the crash and
failure tests, under ``deepspeed`` or ``python``, with the trainer's own flags after its own:

    --pause-at POINT:STEP          rank 0 stops at POINT of step STEP until killed (PauseAt)
    --nan-loss RANK:STEP,STEP...   that rank's loss is NaN at those steps (NanLoss)
    --dump-at-setup DIR            rank 0 writes the step and teacher after setup (DumpAtSetup)
"""

import argparse
import sys

from unimodal_free.cpu_memory import keep_freed_memory

keep_freed_memory()  # as launch/train.py: before torch is imported

from train_callbacks import DumpAtSetup, NanLoss, PauseAt  # noqa: E402  (this script's folder is on sys.path)

from unimodal_free.train import main  # noqa: E402


def callbacks_and_train_args(argv: list[str]) -> tuple[list, list[str]]:
    p = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    p.add_argument("--pause-at", type=PauseAt, action="append", default=[])
    p.add_argument("--nan-loss", type=NanLoss, action="append", default=[])
    p.add_argument("--dump-at-setup", type=DumpAtSetup, action="append", default=[])
    ours, rest = p.parse_known_args(argv)
    return ours.pause_at + ours.nan_loss + ours.dump_at_setup, rest


if __name__ == "__main__":
    callbacks, train_args = callbacks_and_train_args(sys.argv[1:])
    sys.exit(main(train_args, callbacks))
