"""Resume on another number of ranks: what changes, and DeepSpeed's universal checkpoint for ZeRO's state.

Weights, optimizer state, LR schedule, teacher and step carry over exactly:
without ZeRO every rank's optimizer state is whole, so DeepSpeed loads the
checkpoint as it is; under ZeRO 1-3 it is partitioned by rank, so the
checkpoint is first converted to DeepSpeed's universal checkpoint (one folder
per parameter: fp32 weight, exp_avg, exp_avg_sq) by DeepSpeed's own
``ds_to_universal``, and the engine loads that with ``checkpoint.load_universal``
(build_ds_config). The per-rank streams cannot continue across a different
sharding: each rank is reseeded from (seed, rank, step) and its data stream
starts the next fresh segment (:func:`resharded_start_batch`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
from pathlib import Path

from unimodal_free.data.loading.loader import SEGMENT_BATCHES

UNIVERSAL_DIR = "universal"  # under the resuming run's directory: <run_dir>/universal/<tag>


def needs_universal(zero_stage: int) -> bool:
    """ZeRO partitions the optimizer state by rank (stage >= 1); without ZeRO the checkpoint loads as it is."""
    return zero_stage > 0


def to_universal(tag_dir: Path, out_root: Path) -> Path:
    """Convert DeepSpeed's files of ``tag_dir`` into ``out_root/<tag>`` (fresh), with DeepSpeed's ds_to_universal.

    Call on one process; the source is a verified checkpoint (every file's sha256, pickles gated by
    files_to_unpickle) and the output is written here, from it, just before the engine reads it."""
    from deepspeed.checkpoint import ds_to_universal  # heavy: only a resume on another number of ranks

    out = Path(out_root) / Path(tag_dir).name
    shutil.rmtree(out, ignore_errors=True)
    args = argparse.Namespace(input_folder=str(tag_dir), output_folder=str(out), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)  # our engine state has no Megatron-style info block
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ds_to_universal.main(args)  # its prints and progress bars: not the run's log
    return out


def resharded_start_batch(micro_batches: int, num_workers: int, segment_batches: int = SEGMENT_BATCHES) -> int:
    """The data position after a resume on another number of ranks: the first batch of the next segment.

    Every worker of every rank then starts a segment that no rank has read from (skip 0, nothing decoded
    twice); what a user loses is the exact continuation: the rest of the current segment is not read, and
    the samples come from a fresh draw of shards rather than the order an unchanged run would have seen."""
    period = segment_batches * max(1, num_workers)
    return -(-micro_batches // period) * period
