"""HMAC-SHA256 signatures of checkpoint manifests with a per-user key kept outside every run directory.

A signature says "this user's trainer wrote this checkpoint": only such a
checkpoint (or one the user vouches for with ``--trust-checkpoint``) may be
unpickled in full when DeepSpeed's files hold globals outside the
weights-only allow-list (see safe_load.py). The key lives in
``~/.config/unimodal_free/checkpoint.key`` (override:
``UNIMODAL_FREE_CHECKPOINT_KEY=/path``), created on first use with mode 600;
copying a run directory never copies it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from unimodal_free.bounded_read import BoundedReadError, read_text_bounded

KEY_ENV = "UNIMODAL_FREE_CHECKPOINT_KEY"
MAX_KEY_BYTES = 4096  # the key is 64 hex digits and a newline


def key_path() -> Path:
    override = os.environ.get(KEY_ENV)
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "unimodal_free" / "checkpoint.key"


def load_key(create: bool) -> bytes | None:
    """The key's bytes; with ``create`` a new random key is written first if there is none (mode 600)."""
    path = key_path()
    if not path.is_file() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and never replaces a key another process created meanwhile
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        text = read_text_bounded(path, MAX_KEY_BYTES, "checkpoint key").strip()
    except BoundedReadError:  # none, or not a small regular file: no key
        return None
    return text.encode() if text else None


def _body(manifest: dict[str, Any]) -> bytes:
    """What is signed: every field of the manifest but the signature, canonical JSON."""
    return json.dumps({k: v for k, v in manifest.items() if k != "signature"}, sort_keys=True).encode()


def sign(manifest: dict[str, Any]) -> str | None:
    """Hex HMAC of the manifest with this user's key (created if missing); None if no key can be written."""
    try:
        key = load_key(create=True)
    except OSError:
        return None
    return hmac.new(key, _body(manifest), hashlib.sha256).hexdigest() if key else None


def is_signed_by_me(manifest: dict[str, Any]) -> bool:
    """True if the manifest carries a valid signature made with this user's key."""
    signature = manifest.get("signature")
    key = load_key(create=False)
    if not isinstance(signature, str) or not key:
        return False
    return hmac.compare_digest(hmac.new(key, _body(manifest), hashlib.sha256).hexdigest(), signature)
