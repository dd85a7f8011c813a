"""EMA teacher: no gradients, exact EMA update, schedule, and one teacher pass for R views."""

import contextlib
import dataclasses

import numpy as np
import pytest
import torch

from synthetic_batches import make_batch, tiny_config, tiny_specs
from unimodal_free.objective.masking import MaskedView
from unimodal_free.model import EMATeacher
from unimodal_free.objective import Data2VecStudent, make_all_views
from unimodal_free.objective.targets import teacher_targets


def setup(*overrides):
    cfg = tiny_config(*overrides)
    torch.manual_seed(0)
    student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, tiny_specs(cfg))
    return cfg, student, EMATeacher(student, cfg.objective)


def test_teacher_is_frozen_fp32_eval_and_gets_no_grad():
    cfg, student, teacher = setup()
    assert not teacher.module.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in teacher.module.parameters())
    batch = make_batch(cfg, seed=0, pairs=4)
    out = student(batch, teacher.module, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(p.grad is None for p in teacher.module.parameters())
    assert any(p.grad is not None for p in student.parameters())
    # A separate copy: changing the student does not touch the teacher.
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    assert not torch.equal(next(student.parameters()), next(teacher.module.parameters()))


def test_schedule_is_linear_then_constant():
    cfg, _, teacher = setup("objective.ema_start=0.9", "objective.ema_end=0.99", "objective.ema_anneal_steps=10")
    assert teacher.decay(0) == pytest.approx(0.9)
    assert teacher.decay(5) == pytest.approx(0.945)
    assert teacher.decay(10) == pytest.approx(0.99)
    assert teacher.decay(10_000) == pytest.approx(0.99)
    np.testing.assert_allclose(np.diff(teacher.schedule), 0.009, rtol=1e-9)


def test_update_equals_reference():
    cfg, student, teacher = setup("objective.ema_start=0.9", "objective.ema_end=0.99", "objective.ema_anneal_steps=10")
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    batch = make_batch(cfg, seed=1, pairs=4)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        before = {n: p.clone() for n, p in teacher.module.named_parameters()}
        out = student(batch, teacher.module, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        d = teacher.update(student, step)
        assert d == teacher.decay(step)
        for name, s in student.named_parameters():
            expected = d * before[name] + (1 - d) * s.detach()
            torch.testing.assert_close(dict(teacher.module.named_parameters())[name], expected, rtol=1e-6, atol=1e-6)


def test_chunked_update_gathers_each_parameter_once_and_equals_one_pass():
    """What ZeRO-3 relies on: with a gather hook and a small chunk budget, every student parameter is
    gathered exactly once, in order, in chunks within the budget, and the teacher is the same."""
    cfg, student, teacher = setup()
    _, _, reference = setup()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    seen: list[list[torch.nn.Parameter]] = []

    @contextlib.contextmanager
    def gather(params):
        seen.append(list(params))
        yield

    budget = 5000
    teacher.update(student, 0, gather=gather, chunk_numel=budget)
    reference.update(student, 0)
    flat = [p for chunk in seen for p in chunk]
    assert len(seen) > 3 and len(flat) == len(list(student.parameters()))
    assert all(a is b for a, b in zip(flat, student.parameters()))
    assert all(sum(p.numel() for p in c) <= budget or len(c) == 1 for c in seen)
    for (name, a), b in zip(teacher.module.named_parameters(), reference.module.parameters()):
        assert torch.equal(a, b), name


def view_slice(v: MaskedView, r: int) -> MaskedView:
    """The r-th of R views as its own single-view MaskedView."""
    fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    out = {k: (x[r:: v.num_views] if isinstance(x, (torch.Tensor, tuple)) else x) for k, x in fields.items()}
    out["num_views"] = 1
    return MaskedView(**out)


@pytest.mark.parametrize("space", ["latents", "elements"])
def test_one_teacher_pass_equals_r_passes(space):
    R = 3
    cfg, student, teacher = setup(f"objective.target_space={space}", f"objective.num_views={R}")
    batch = make_batch(cfg, seed=2, pairs=4)
    views = make_all_views(batch, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
    shared = teacher_targets(teacher.module, batch, views, cfg.objective)
    for r in range(R):
        single = teacher_targets(teacher.module, batch, {m: view_slice(v, r) for m, v in views.items()}, cfg.objective)
        for m in views:
            T = single[m].shape[1]
            torch.testing.assert_close(shared[m][r::R][:, :T], single[m], rtol=1e-5, atol=1e-5)
