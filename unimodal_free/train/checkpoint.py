"""Checkpoints: DeepSpeed engine state + EMA teacher + trainer state + per-rank RNG.

Layout under ``run_dir/checkpoints``::

    latest                      tag of the newest complete checkpoint (atomic pointer)
    step00000200/
        mp_rank_00_model_states.pt, *optim_states.pt   DeepSpeed's own files
        teacher.pt              EMA teacher state_dict (fp32, rank 0)
        rank00000_state.pt ...  per-rank RNG + data position (weights_only-loadable)
        trainer_state.json      step, samples seen, config, tokenizer reference
        COMPLETE                written last, after every rank finished; lists every file + size

Write order makes a half-written checkpoint invisible: all ranks write their
files, barrier, then rank 0 writes COMPLETE and swaps ``latest`` atomically
(tmp + fsync + os.replace). A reader trusts a tag only if COMPLETE is there
and every file it lists has the listed size.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from unimodal_free.train import dist, testhooks

LATEST = "latest"
COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
TEACHER = "teacher.pt"
_TAG = re.compile(r"^step(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the path."""


@dataclass
class TrainerState:
    """What the trainer needs besides the engine to continue exactly."""

    step: int = 0  # optimizer steps taken (applied or skipped)
    micro_batches: int = 0  # micro-batches consumed per rank (data position)
    samples_seen: int = 0  # rows over all ranks
    skipped_steps: int = 0
    skipped_samples: int = 0
    nonfinite_in_row: int = 0
    train_time_s: float = 0.0  # wall time in training steps (eval budget)
    eval_time_s: float = 0.0
    world_size: int = 1
    tokenizer: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerState":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def step_of(tag: str) -> Optional[int]:
    m = _TAG.match(tag)
    return int(m.group(1)) if m else None


def _fsync_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torch_save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_complete(tag_dir: Path) -> bool:
    """COMPLETE exists and every file it lists is there with its recorded size."""
    marker = tag_dir / COMPLETE
    try:
        listing = json.loads(marker.read_text())
        files = listing["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for rel, size in files.items():
        f = tag_dir / rel
        if not f.is_file() or f.stat().st_size != size:
            return False
    return True


def mark_complete(tag_dir: Path, step: int) -> None:
    """Write COMPLETE listing every file of ``tag_dir`` with its size (call after all ranks wrote)."""
    files = {
        str(p.relative_to(tag_dir)): p.stat().st_size
        for p in sorted(tag_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.name != COMPLETE
    }
    _fsync_write(tag_dir / COMPLETE, json.dumps({"step": step, "files": files}, indent=1) + "\n")


def point_latest(root: Path, tag: str) -> None:
    """Swap the ``latest`` pointer atomically (tmp + fsync + os.replace)."""
    _fsync_write(Path(root) / LATEST, tag + "\n")


def rank_state_name(rank: int) -> str:
    return f"rank{rank:05d}_state.pt"


class CheckpointManager:
    """Save/find/load/prune checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.keep_last = keep_last

    # ---------------------------------------------------------------- finding
    def complete_tags(self) -> list[str]:
        """Complete checkpoint tags, oldest first."""
        if not self.root.is_dir():
            return []
        tags = [p.name for p in self.root.iterdir() if p.is_dir() and step_of(p.name) is not None]
        return sorted((t for t in tags if is_complete(self.root / t)), key=step_of)

    def latest_tag(self) -> Optional[str]:
        """The tag ``latest`` points at if it is complete, else the newest complete tag."""
        pointer = self.root / LATEST
        if pointer.is_file():
            tag = pointer.read_text().strip()
            if step_of(tag) is not None and is_complete(self.root / tag):
                return tag
        tags = self.complete_tags()
        return tags[-1] if tags else None

    # ---------------------------------------------------------------- saving
    def save(self, engine, teacher_state: dict[str, torch.Tensor], state: TrainerState, rank_state: dict[str, Any]) -> Path:
        """Collective: every rank calls it at the same step. ``teacher_state`` matters on rank 0 only."""
        tag = tag_for(state.step)
        tag_dir = self.root / tag
        r = dist.rank()
        if r == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if tag_dir.exists():  # leftovers of a crashed save of the same step
                shutil.rmtree(tag_dir)
        dist.barrier()
        engine.save_checkpoint(str(self.root), tag=tag, client_state={"trainer": asdict(state)}, save_latest=False)
        tag_dir.mkdir(parents=True, exist_ok=True)
        _torch_save_atomic(rank_state, tag_dir / rank_state_name(r))
        if r == 0:
            _torch_save_atomic({k: v.detach().cpu() for k, v in teacher_state.items()}, tag_dir / TEACHER)
            _fsync_write(tag_dir / TRAINER_STATE, json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")
        testhooks.hook("in_save", state.step, self.run_dir, r)
        dist.barrier()  # every rank's files are on disk
        if r == 0:
            mark_complete(tag_dir, state.step)
            point_latest(self.root, tag)
            self.prune()
        dist.barrier()
        return tag_dir

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
                shutil.rmtree(p, ignore_errors=True)

    def remove_incomplete_after(self, step: int) -> None:
        """On resume: partial checkpoints from the crashed run would otherwise linger."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            s = step_of(p.name)
            if p.is_dir() and s is not None and s > step and not is_complete(p):
                shutil.rmtree(p, ignore_errors=True)

    # ---------------------------------------------------------------- loading
    @staticmethod
    def read_state(tag_dir: Path) -> TrainerState:
        return TrainerState.from_dict(json.loads((Path(tag_dir) / TRAINER_STATE).read_text()))

    def load(self, engine, tag_dir: Path) -> tuple[TrainerState, dict[str, torch.Tensor], dict[str, Any]]:
        """Collective: restore the engine; return trainer state, teacher state_dict and this rank's state."""
        tag_dir = Path(tag_dir)
        if not is_complete(tag_dir):
            raise CheckpointError(f"{tag_dir}: checkpoint is incomplete (no valid {COMPLETE} marker)")
        state = self.read_state(tag_dir)
        load_path, _ = engine.load_checkpoint(
            str(tag_dir.parent), tag=tag_dir.name, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if load_path is None:
            raise CheckpointError(f"{tag_dir}: DeepSpeed could not load the engine state")
        teacher_sd = torch.load(tag_dir / TEACHER, map_location="cpu", weights_only=True)
        rank_state = torch.load(tag_dir / rank_state_name(dist.rank()), map_location="cpu", weights_only=True)
        return state, teacher_sd, rank_state


def resolve_resume(spec: str, run_dir: Path) -> Optional[Path]:
    """``train.resume`` -> a complete checkpoint dir, or None for a fresh start.

    ``""``: fresh (refused if the run dir already has checkpoints, so a run is
    never silently overwritten); ``"auto"``: the run dir's latest good
    checkpoint or fresh; a path: a run dir (its latest good checkpoint), its
    ``checkpoints`` dir, or one checkpoint tag dir.
    Raises CheckpointError with a one-line message.
    """
    run_dir = Path(run_dir)
    if spec == "":
        existing = CheckpointManager(run_dir).latest_tag()
        if existing:
            raise CheckpointError(
                f"{run_dir}: already holds checkpoint {existing}; set train.resume=auto to continue "
                f"or choose another train.output_dir"
            )
        return None
    if spec == "auto":
        tag = CheckpointManager(run_dir).latest_tag()
        return run_dir / "checkpoints" / tag if tag else None
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(f"train.resume: {path} does not exist")
    if step_of(path.name) is not None:
        if not is_complete(path):
            raise CheckpointError(f"train.resume: {path} is an incomplete checkpoint (no valid {COMPLETE})")
        return path
    candidates = [path, path.parent] if path.name == "checkpoints" else [path]
    for run in candidates:
        tag = CheckpointManager(run).latest_tag()
        if tag:
            return run / "checkpoints" / tag
    raise CheckpointError(f"train.resume: {path} holds no complete checkpoint")
