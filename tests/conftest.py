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
