"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Featurizing runs one thread per DataLoader worker; in-process tests do the same (2 shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def checkpoint_signing_key(tmp_path_factory):
    """Checkpoints written by the suite (and the trainings it launches) are signed with a key of its own,
    never the user's ~/.config/unimodal_free/checkpoint.key."""
    import os

    KEY_ENV = "UNIMODAL_FREE_CHECKPOINT_KEY"  # unimodal_free.store.signing.KEY_ENV
    path = tmp_path_factory.getbasetemp() / "keys" / "checkpoint.key"
    old = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = str(path)
    yield path
    if old is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = old
