"""The checkpoint folder format: names, tags, the manifest that says a checkpoint is whole, and finding one.

Layout under ``run_dir/checkpoints`` (the engine's files are written by
:mod:`unimodal_free.train.checkpoint_manager`; the rest of the format, both ways, is here)::

    latest                      tag of the newest complete checkpoint (atomic pointer)
    step00000200/
        mp_rank_00_model_states.pt, *optim_states.pt   DeepSpeed's own files
        model.safetensors       student + EMA teacher, fp32, config in the metadata (rank 0)
        rank00000_state.pt ...  per-rank RNG + data position (weights_only-loadable)
        trainer_state.json      step, samples seen, config, tokenizer reference
        COMPLETE                written last: every file's size and sha256, HMAC-signed (signing.py)

Write order makes a half-written checkpoint invisible: all ranks write their
files, barrier, then rank 0 writes COMPLETE (:func:`mark_complete`) and swaps
``latest`` atomically (:func:`point_latest`: tmp + fsync + os.replace). Finding
the newest complete tag trusts COMPLETE and the sizes (cheap); resuming
(:func:`resolve_resume`) also checks every sha256 (:func:`verify`), eval the one
file it reads; :func:`files_to_unpickle` says which of DeepSpeed's files may be
unpickled in full.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from unimodal_free.bounded_read import BoundedReadError, open_bounded, read_json_bounded, read_text_bounded
from unimodal_free.config import as_data
from unimodal_free.run_dir import RunDir
from unimodal_free.store import signing
from unimodal_free.store.export import EXPORT_NAME
from unimodal_free.store.safe_load import unsafe_globals

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


def mark_complete(tag_dir: Path, step: int, writer: Optional[RunDir] = None) -> None:
    """Write COMPLETE listing every file of ``tag_dir`` with size and sha256, signed (call after all ranks wrote).

    ``writer``: the run directory's (default: one rooted at the checkpoints folder)."""
    files = {
        str(p.relative_to(tag_dir)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(tag_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and p.name != COMPLETE
    }
    manifest: dict[str, Any] = {"step": step, "files": files}
    signature = signing.sign(manifest)
    if signature is None:
        print(f"warning: cannot write the signing key {signing.key_path()}; {tag_dir} is unsigned",
              file=sys.stderr, flush=True)
    else:
        manifest["signature"] = signature
    (writer or RunDir(tag_dir.parent)).write_atomic(tag_dir / COMPLETE, json.dumps(manifest, indent=1) + "\n")


def point_latest(root: Path, tag: str, writer: Optional[RunDir] = None) -> None:
    """Swap the ``latest`` pointer atomically (tmp + fsync + os.replace)."""
    (writer or RunDir(root)).write_atomic(Path(root) / LATEST, tag + "\n")


def rank_state_name(rank: int) -> str:
    return f"rank{rank:05d}_state.pt"


def _completed_tags(run_dir: Path) -> list[Path]:
    """Tag dirs that were once finished (COMPLETE present, or named by ``latest``): ``latest``'s first, then newest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    named = read_pointer(root)
    dirs = [p for p in root.iterdir() if p.is_dir() and step_of(p.name) is not None]
    dirs = [p for p in dirs if (p / COMPLETE).exists() or p.name == named]
    return sorted(dirs, key=lambda p: (p.name == named, step_of(p.name)), reverse=True)


def announce(message: str) -> None:
    """Before the process group exists: every rank resolves the same checkpoint, rank 0 says so."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


def newest_intact(run_dir: Path, trust: bool = False, say: Callable[[str], None] = announce) -> Optional[Path]:
    """The newest checkpoint of ``run_dir`` whose every file matches its sha256; None if it never had one.

    A broken newer checkpoint is skipped with a message (``say``); if every finished checkpoint is broken,
    CheckpointError names the newest one's bad file (never a silent fresh start over it).
    """
    broken: list[CheckpointError] = []
    for tag_dir in _completed_tags(run_dir):
        try:
            verify(tag_dir)
        except CheckpointError as exc:
            broken.append(exc)
            continue
        if broken:
            say(f"falling back to {tag_dir}, the newest intact checkpoint; broken: {'; '.join(map(str, broken))}")
        files_to_unpickle(tag_dir, trust)  # refuse now, in one line, before any process group
        return tag_dir
    if broken:
        raise CheckpointError(f"{broken[0]} (no intact checkpoint in {Path(run_dir) / 'checkpoints'})")
    return None


def resolve_resume(spec: str, run_dir: Path, trust: bool = False,
                   say: Callable[[str], None] = announce) -> Optional[Path]:
    """``train.resume`` -> a verified checkpoint dir, or None for a fresh start.

    ``""``: fresh (refused if the run dir already has checkpoints, so a run is
    never silently overwritten); ``"auto"``: the run dir's newest intact
    checkpoint, or fresh if it never finished one; a path: a run dir (its newest
    intact checkpoint), its ``checkpoints`` dir, or one checkpoint tag dir.
    Every file's sha256 is checked and unsigned files needing more than the
    weights-only loader are refused (see :func:`files_to_unpickle`).
    Raises CheckpointError with a one-line message.
    """
    run_dir = Path(run_dir)
    if spec == "":
        existing = _completed_tags(run_dir)
        if existing:
            raise CheckpointError(
                f"{run_dir}: already holds checkpoint {existing[0].name}; set train.resume=auto to continue "
                f"or choose another train.output_dir"
            )
        return None
    if spec == "auto":
        return newest_intact(run_dir, trust, say)
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(f"train.resume: {path} does not exist")
    if step_of(path.name) is not None:
        if not is_complete(path):
            raise CheckpointError(f"train.resume: {path} is an incomplete checkpoint (no valid {COMPLETE})")
        verify(path)
        files_to_unpickle(path, trust)
        return path
    run = path.parent if path.name == "checkpoints" else path
    tag_dir = newest_intact(run, trust, say)
    if tag_dir is None:
        raise CheckpointError(f"train.resume: {path} holds no complete checkpoint")
    return tag_dir


def files_to_unpickle(tag_dir: Path, trust: bool) -> list[Path]:
    """The pickle files of ``tag_dir`` that need globals beyond the weights-only allow-list.

    Allowed only when the checkpoint's COMPLETE is signed with this user's key (this user's trainer wrote
    it) or ``trust`` (--trust-checkpoint); otherwise CheckpointError names the file and the global.
    Scanning reads pickle opcodes only: nothing runs.
    """
    tag_dir = Path(tag_dir)
    needs = {p: unsafe_globals(p) for p in sorted(tag_dir.rglob("*.pt"))}
    needs = {p: names for p, names in needs.items() if names}
    if not needs:
        return []
    manifest = read_manifest(tag_dir) or {"files": {}}
    path, names = next(iter(needs.items()))
    if not (trust or signing.is_signed_by_me(manifest)):
        raise CheckpointError(
            f"{path}: loading it would call {', '.join(names[:3])} (outside the weights-only allow-list) and "
            f"{tag_dir / COMPLETE} is not signed with your key {signing.key_path()}; pass --trust-checkpoint "
            f"only if you trust where this checkpoint comes from"
        )
    unlisted = [p for p in needs if str(p.relative_to(tag_dir)) not in manifest["files"]]
    if unlisted:
        raise CheckpointError(f"{unlisted[0]}: not listed in {tag_dir / COMPLETE}; refusing to unpickle it")
    return list(needs)
