"""Which code produced a result: package version and git commit, and no failure outside a checkout."""

import shutil
import subprocess
from pathlib import Path

from unimodal_free.provenance import PACKAGE_DIR, git_state, package_version, provenance


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_commit_of_the_checkout_the_package_lives_in():
    state = git_state()
    assert state["git_commit"] == git("rev-parse", "HEAD", cwd=PACKAGE_DIR)
    assert isinstance(state["git_dirty"], bool)
    assert provenance()["version"] == package_version() is not None


def test_no_commit_outside_a_checkout_or_for_an_untracked_copy(tmp_path):
    copy = tmp_path / "site-packages" / "unimodal_free"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert git_state(copy) == {"git_commit": None, "git_dirty": None}
    # Installed into a venv inside some other repository: that repository's commit is not ours.
    git("init", "-q", cwd=tmp_path)
    assert git_state(copy) == {"git_commit": None, "git_dirty": None}
    assert git_state(Path("/nonexistent")) == {"git_commit": None, "git_dirty": None}
