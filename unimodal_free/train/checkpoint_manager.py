"""The engine's side of a checkpoint: DeepSpeed engine state + EMA teacher + trainer state + per-rank RNG.

:class:`CheckpointManager` saves one (every rank writes its DeepSpeed files and its RNG state,
rank 0 the consolidated weights and trainer_state.json, then marks it complete), loads one back
into an engine, and prunes old ones. The folder format (names, manifest, ``latest``, finding and
verifying a checkpoint, which files may be unpickled) is :mod:`unimodal_free.store.checkpoints`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch

from unimodal_free.run_dir import RunDir
from unimodal_free.store.checkpoints import (COMPLETE, CONSOLIDATED, TRAINER_STATE, CheckpointError, complete_tags,
                                             files_to_unpickle, is_complete, latest_tag, mark_complete, point_latest,
                                             rank_state_name, read_trainer_state, step_of, tag_for)
from unimodal_free.store.export import read_export, save_export
from unimodal_free.store.safe_load import load_weights_only, weights_only_engine
from unimodal_free.train import dist
from unimodal_free.train.callbacks import TrainerCallback
from unimodal_free.train.reshard import UNIVERSAL_DIR, to_universal
from unimodal_free.train.state import TrainerState
from unimodal_free.train.zero_gather import gathered_state_dict


class CheckpointSaveError(CheckpointError):
    """Writing a checkpoint failed (a full disk, an I/O error); its partial folder is removed."""


FULL_DISK_BYTES = 64 << 20  # free space under this after a failed save: say the disk is full


class CheckpointManager:
    """Save/find/load/prune checkpoints of one run directory; ``callbacks``: see callbacks.py (production: none)."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2, callbacks: Optional[TrainerCallback] = None):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.files = RunDir(self.run_dir)  # every write below: never through a link in the run directory
        self.keep_last = keep_last
        self.callbacks = callbacks if callbacks is not None else TrainerCallback()

    # ---------------------------------------------------------------- finding
    def complete_tags(self) -> list[str]:
        """Complete checkpoint tags, oldest first."""
        return complete_tags(self.root)

    def latest_tag(self) -> Optional[str]:
        """The tag ``latest`` points at if it is complete, else the newest complete tag."""
        return latest_tag(self.root)

    # ---------------------------------------------------------------- saving
    def save(self, engine, teacher_state: dict[str, torch.Tensor], state: TrainerState, rank_state: dict[str, Any]) -> Path:
        """Collective: every rank calls it at the same step. ``teacher_state`` matters on rank 0 only."""
        tag = tag_for(state.step)
        tag_dir = self.root / tag
        r = dist.rank()
        if r == 0:
            self.files.fresh_dir(tag_dir)  # leftovers of a crashed save of the same step go first
        dist.barrier()
        try:
            self.files.makedirs(tag_dir)  # every rank: a real folder (DeepSpeed writes into it by path)
            engine.save_checkpoint(str(self.root), tag=tag, client_state={"trainer": asdict(state)}, save_latest=False)
            self.files.save_atomic(tag_dir / rank_state_name(r), lambda f: torch.save(rank_state, f))
            student = gathered_state_dict(engine.module, engine.zero_optimization_stage() == 3, r)  # collective (ZeRO-3)
            if r == 0:
                # The engine trains 0-dim parameters as (1,) (ds_compat): store the model's shapes, as the teacher has.
                student = {k: (v.reshape(teacher_state[k].shape) if k in teacher_state else v)
                           for k, v in student.items()}
                save_export(tag_dir / CONSOLIDATED, student, teacher_state, state.config, state.tokenizer, state.step,
                            root=self.run_dir)
                self.files.write_atomic(tag_dir / TRAINER_STATE, json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")
            self.callbacks.on_checkpoint_files_written(tag_dir, state.step, r)
            dist.barrier()  # every rank's files are on disk
            if r == 0:
                mark_complete(tag_dir, state.step, self.files)
        except (OSError, RuntimeError) as exc:  # RuntimeError: torch's zip writer on a full disk ("unexpected pos")
            raise self._save_failed(tag_dir, exc) from None
        if r == 0:
            point_latest(self.root, tag, self.files)
            self.prune()
        dist.barrier()
        return tag_dir

    def _save_failed(self, tag_dir: Path, exc: BaseException) -> CheckpointSaveError:
        """Remove the partial ``tag_dir`` (``latest`` still names the last complete checkpoint) and say so."""
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        self.files.remove(tag_dir)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())[:200]
        if free is not None and free < FULL_DISK_BYTES:  # torch's own words there: "unexpected pos 2627072 vs ..."
            reason = f"the disk is full: {free} bytes free"
        resume = self.latest_tag()
        return CheckpointSaveError(
            f"{tag_dir}: saving the checkpoint failed ({reason}); the partial folder is removed, "
            f"{self.root / resume if resume else 'no checkpoint'} is the resume point")

    def prune(self) -> None:
        """Keep the newest ``keep_last`` complete checkpoints (and always ``latest``); drop stale partial ones."""
        if not self.root.is_dir():
            return
        latest = self.latest_tag()
        complete = self.complete_tags()
        keep = set(complete[-self.keep_last :]) if self.keep_last > 0 else set(complete)
        if latest:
            keep.add(latest)
        newest = step_of(latest) if latest else -1
        for p in self.root.iterdir():
            s = step_of(p.name)
            if not p.is_dir() or s is None or p.name in keep:
                continue
            # Incomplete dirs newer than latest may be a save in progress elsewhere; leave those.
            if p.name in complete or s < newest:
                self.files.remove(p)

    def remove_incomplete_after(self, step: int) -> None:
        """On resume: partial checkpoints from the crashed run would otherwise linger."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            s = step_of(p.name)
            if p.is_dir() and s is not None and s > step and not is_complete(p):
                self.files.remove(p)

    # ---------------------------------------------------------------- loading
    @staticmethod
    def read_state(tag_dir: Path) -> TrainerState:
        """The checkpoint's trainer_state.json; CheckpointError naming the file when it is not one we wrote."""
        state = read_trainer_state(tag_dir)  # bounded read: missing, too large, not a JSON object
        try:
            return TrainerState.from_dict(state)
        except ValueError as exc:  # a field of the wrong type or range
            path = Path(tag_dir) / TRAINER_STATE
            raise CheckpointError(f"{path}: not a trainer state ({' '.join(str(exc).split())[:200]})") from None

    def load(self, engine, tag_dir: Path, trust: bool = False, universal: bool = False,
             resharded: bool = False) -> tuple[TrainerState, dict[str, torch.Tensor], Optional[dict[str, Any]]]:
        """Collective: restore the engine; return trainer state, teacher state_dict and this rank's state.

        ``universal``: the engine was built to load DeepSpeed's universal checkpoint; rank 0 converts
        ``tag_dir`` into this run's ``universal/`` folder first (reshard.py). ``resharded``: written by
        another number of ranks, so there is no state of this rank (None).
        Nothing is unpickled in full unless :func:`files_to_unpickle` allows it (signed by this user, or ``trust``).
        """
        tag_dir = Path(tag_dir)
        if not is_complete(tag_dir):
            raise CheckpointError(f"{tag_dir}: checkpoint is incomplete (no valid {COMPLETE} marker)")
        state = self.read_state(tag_dir)
        unpickle = files_to_unpickle(tag_dir, trust)  # refuses the source before anything reads it in full
        load_dir = tag_dir
        if universal:
            out_root = self.run_dir / UNIVERSAL_DIR
            if dist.rank() == 0:
                self.files.makedirs(out_root)
                to_universal(tag_dir, out_root)
            dist.barrier()
            load_dir = out_root / tag_dir.name
            unpickle = sorted(load_dir.rglob("*.pt"))  # written just now, by this run, from the verified source
        with weights_only_engine(engine, unpickle):
            load_path, _ = engine.load_checkpoint(
                str(load_dir.parent), tag=load_dir.name, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        if load_path is None:
            raise CheckpointError(f"{tag_dir}: DeepSpeed could not load the engine state")
        if universal:
            dist.barrier()  # every rank has read it
            if dist.rank() == 0:
                self.files.remove(self.run_dir / UNIVERSAL_DIR)
        teacher_sd = read_export(tag_dir / CONSOLIDATED).teacher
        rank_state = None if resharded else load_weights_only(tag_dir / rank_state_name(dist.rank()), map_location="cpu")
        return state, teacher_sd, rank_state
