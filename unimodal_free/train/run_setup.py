"""What the command line hands the trainer: the validated run setup, and the process exit codes.

Below both ``cli.py`` (which builds a :class:`RunSetup`) and the trainer and checkpointing (which
use it), so neither imports the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from unimodal_free.config import Config, Source

EXIT_OK = 0
# EXIT_USAGE (2): bad flag, config, data, tokenizer or resume target (unimodal_free/usage.py).
EXIT_COLLAPSE = 3  # the collapse guard stopped the run
EXIT_NONFINITE = 4  # too many non-finite steps in a row (a checkpoint was saved first)
EXIT_SAVE_FAILED = 5  # a checkpoint could not be written (full disk); its partial folder was removed


class SetupError(Exception):
    """A one-line user error detected before training starts."""


@dataclass
class RunSetup:
    """Everything decided before the process group starts."""

    cfg: Config
    run_dir: Path
    world_size: int
    tokenizer: object
    train_sources: list[Source]
    heldout_sources: list[Source]
    resume_dir: Optional[Path]
    trust_checkpoint: bool = False
    notes: list[str] = field(default_factory=list)  # lines already printed here, for log.txt once it opens
    config_path: Optional[str] = None  # --config
    resharded: bool = False  # resuming a checkpoint written by another number of ranks (train/reshard.py)
    universal: bool = False  # ... and ZeRO's partitioned state goes through DeepSpeed's universal checkpoint
