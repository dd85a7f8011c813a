"""Which code produced a result: the installed package version and, when the
package runs from a git checkout, its commit."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

PACKAGE = "unimodal_free"
PACKAGE_DIR = Path(__file__).resolve().parent


def package_version() -> Optional[str]:
    """The version pip recorded for the package (None when it is imported from a tree never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def _git(directory: Path, *args: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git on this machine, or it hung
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(package_dir: Path = PACKAGE_DIR) -> dict[str, object]:
    """{"git_commit": sha or None, "git_dirty": bool or None} of the checkout the package files live in.

    Only when the package's own ``__init__.py`` is tracked there: a copy
    installed into site-packages of some other repository (a venv inside a
    project) reports nothing rather than that repository's commit.
    """
    if _git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return {"git_commit": None, "git_dirty": None}
    status = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git(package_dir, "rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def provenance() -> dict[str, object]:
    """Package version, git commit (when available) and the date, for result files."""
    return {"version": package_version(), **git_state(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
