"""A checkpoint directory as it lies on disk: its names, its tags, and the manifest that says it is whole.

Layout under ``run_dir/checkpoints`` (written by :mod:`unimodal_free.train.checkpoint`)::

    latest                      tag of the newest complete checkpoint (atomic pointer)
    step00000200/
        mp_rank_00_model_states.pt, *optim_states.pt   DeepSpeed's own files
        model.safetensors       student + EMA teacher, fp32, config in the metadata (rank 0)
        rank00000_state.pt ...  per-rank RNG + data position (weights_only-loadable)
        trainer_state.json      step, samples seen, config, tokenizer reference
        COMPLETE                written last: every file's size and sha256, HMAC-signed (signing.py)

Here is what a reader needs (eval, query, ``unimodal_free.load``, resume): finding the
newest complete tag trusts COMPLETE and the sizes (cheap); :func:`verify` also
checks the sha256 of every file (resume) or of the one file eval reads.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Optional

from unimodal_free.bounded_read import BoundedReadError, open_bounded, read_json_bounded, read_text_bounded
from unimodal_free.config import as_data
from unimodal_free.store.export import EXPORT_NAME

LATEST = "latest"
COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
CONSOLIDATED = EXPORT_NAME  # same format as the final export, one per checkpoint
HASH_CHUNK = 8 << 20
# COMPLETE and trainer_state.json are a few KB (a manifest takes ~150 bytes per file: 4 MiB lists ~25k files);
# a larger one is not the trainer's and is refused before it is read. Both are written as regular files,
# never links, so a link is refused too.
MAX_METADATA_BYTES = 4 << 20
MAX_POINTER_BYTES = 4096  # ``latest`` holds one tag name
_TAG = re.compile(r"^step(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the path."""


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def step_of(tag: str) -> Optional[int]:
    m = _TAG.match(tag)
    return int(m.group(1)) if m else None


def read_metadata(path: Path) -> Any:
    """A JSON file of a checkpoint (COMPLETE, trainer_state.json), bounded; CheckpointError naming it and the cap."""
    try:
        return read_json_bounded(path, MAX_METADATA_BYTES, "checkpoint metadata", links=False)
    except BoundedReadError as exc:
        raise CheckpointError(str(exc)) from None


def read_trainer_state(tag_dir: Path) -> dict[str, Any]:
    """trainer_state.json as a dict (resume, the model card); CheckpointError naming it when unusable."""
    path = Path(tag_dir) / TRAINER_STATE
    state = read_metadata(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a trainer state (no JSON object)")
    return state


def load_manifest(tag_dir: Path) -> dict[str, Any]:
    """COMPLETE's content; CheckpointError saying why it is missing or unusable."""
    path = Path(tag_dir) / COMPLETE
    manifest = read_metadata(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{path}: not a checkpoint manifest (no \"files\" object)")
    return manifest


def read_manifest(tag_dir: Path) -> Optional[dict[str, Any]]:
    """COMPLETE's content, or None if it is missing or unusable."""
    try:
        return load_manifest(tag_dir)
    except CheckpointError:
        return None


def read_pointer(root: Path) -> str:
    """The tag ``root/latest`` names ("" when it is missing or unusable: the newest complete tag is found anyway)."""
    try:
        return read_text_bounded(Path(root) / LATEST, MAX_POINTER_BYTES, "checkpoint pointer", links=False).strip()
    except BoundedReadError:
        return ""


def _entry(value: Any) -> tuple[Optional[int], Optional[str]]:
    """(size, sha256) of a manifest entry (older manifests list the size alone)."""
    if isinstance(value, dict):
        return value.get("size"), value.get("sha256")
    return (value if isinstance(value, int) else None), None


def _inside(rel: str) -> bool:
    """A manifest name that stays inside its checkpoint folder (no absolute path, no ``..``)."""
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts


def _named(tag_dir: Path, rel: str) -> str:
    """A manifest name in a message: as is when plain, else JSON-escaped (the manifest may be anyone's;
    a newline in a name must not forge a line of log.txt)."""
    return str(tag_dir / rel) if rel.isprintable() and rel.isascii() else f"{tag_dir}/{as_data(rel)}"


def is_complete(tag_dir: Path) -> bool:
    """COMPLETE exists and every file it lists is there with its recorded size (no hashing: cheap)."""
    manifest = read_manifest(tag_dir)
    if manifest is None:
        return False
    for rel, value in manifest["files"].items():
        if not _inside(rel):
            return False
        f = Path(tag_dir) / rel
        if not f.is_file() or f.stat().st_size != _entry(value)[0]:
            return False
    return True


def file_sha256(path: Path) -> str:
    """Streamed: memory stays one chunk whatever the file's size."""
    h = hashlib.sha256()
    with open_bounded(path, None, "checkpoint files") as f:  # a fifo or device is refused, not waited on
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(tag_dir: Path, only: Optional[list[str]] = None) -> dict[str, Any]:
    """Check size and sha256 of every file COMPLETE lists (or of ``only``); returns the manifest.

    Raises CheckpointError naming the first file that is missing, resized or altered.
    """
    tag_dir = Path(tag_dir)
    try:
        manifest = load_manifest(tag_dir)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; the checkpoint is incomplete") from None
    files = manifest["files"]
    for rel in only if only is not None else sorted(files):
        path = _named(tag_dir, rel)
        if not _inside(rel):
            raise CheckpointError(f"{path}: {COMPLETE} lists a file outside the checkpoint")
        if rel not in files:
            raise CheckpointError(f"{path}: not listed in {tag_dir / COMPLETE}")
        size, digest = _entry(files[rel])
        if not (tag_dir / rel).is_file():
            raise CheckpointError(f"{path}: missing (listed in {COMPLETE})")
        if (tag_dir / rel).stat().st_size != size:
            raise CheckpointError(f"{path}: {(tag_dir / rel).stat().st_size} bytes, {COMPLETE} lists {size}")
        if digest is None:
            raise CheckpointError(f"{path}: {COMPLETE} lists no sha256 (written by an older unimodal_free)")
        if file_sha256(tag_dir / rel) != digest:
            raise CheckpointError(f"{path}: sha256 differs from {COMPLETE} (the file is corrupt or was altered)")
    return manifest


def complete_tags(root: Path) -> list[str]:
    """Complete checkpoint tags under ``root`` (a run's ``checkpoints`` dir), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    tags = [p.name for p in root.iterdir() if p.is_dir() and step_of(p.name) is not None]
    return sorted((t for t in tags if is_complete(root / t)), key=step_of)


def latest_tag(root: Path) -> Optional[str]:
    """The tag ``latest`` points at if it is complete, else the newest complete tag under ``root``."""
    tag = read_pointer(root)
    if step_of(tag) is not None and is_complete(Path(root) / tag):
        return tag
    tags = complete_tags(root)
    return tags[-1] if tags else None
