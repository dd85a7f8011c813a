"""Linear CKA against known cases: orthogonal and scaled copies score 1, independent features about 0."""

import math

import pytest
import torch

from unimodal_free.eval.cka import linear_cka


def test_orthogonal_transform_and_scaling_leave_cka_at_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))  # orthogonal
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, x * 3.7) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, x + 5.0) == pytest.approx(1.0, abs=1e-9)  # centring


def test_independent_features_are_near_zero_and_partial_overlap_between():
    g = torch.Generator().manual_seed(1)
    x, noise = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    assert linear_cka(x, noise) < 0.02  # E ~ p q / n for independent Gaussians
    mixed = linear_cka(x, x + noise)
    assert 0.3 < mixed < 0.9
    assert linear_cka(x, torch.cat([x, noise], 1)) < 1.0  # a different width is fine


def test_known_value_of_a_small_case():
    """x = [1, 2, 3], y = [1, 3, 2]: centred x = [-1, 0, 1], y = [-1, 1, 0] -> (1)^2 / (2 * 2) = 0.25."""
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [3.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25)


def test_bad_shapes_and_constant_input():
    with pytest.raises(ValueError, match="same n"):
        linear_cka(torch.zeros(3, 2), torch.zeros(4, 2))
    assert math.isnan(linear_cka(torch.ones(5, 2), torch.randn(5, 2)))  # a constant side has no variance to compare
