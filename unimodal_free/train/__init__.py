"""Trainer: DeepSpeed engine, EMA teacher, checkpoints, TensorBoard, export.

``main(argv)`` runs a whole training (``launch/train.py`` calls it); it is
imported lazily so importing ``unimodal_free.train.<module>`` does not pull in DeepSpeed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from unimodal_free.train.callbacks import TrainerCallback


def main(argv: Optional[list[str]] = None, callbacks: Sequence["TrainerCallback"] = ()) -> int:
    """``callbacks``: named points of the run (train/callbacks.py); ``launch/train.py`` installs none."""
    from unimodal_free.train.cli import build_parser

    build_parser().parse_args(argv)  # a bad flag: one line and exit 2 before torch and DeepSpeed load
    from unimodal_free.train.cli import main as _main

    return _main(argv, callbacks)


__all__ = ["main"]
