"""Trainer pieces that need no DeepSpeed launch: DeepSpeed dict, LR schedule, CLI/config
validation, the non-finite-skipping optimizer, the stop flag and the matmul peak probe."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from unimodal_free.config import ConfigError, OptimConfig, load_config
from unimodal_free.train.cli import build_parser, load_run_config
from unimodal_free.train.ds_config import build_ds_config
from unimodal_free.train.mfu import measure_matmul_peak, mfu
from unimodal_free.train.optim import AdamWSkipNonFinite, build_optimizer, param_groups
from unimodal_free.train.schedule import lambda_lr, lr_schedule
from unimodal_free.train.signals import StopRequest


def test_ds_config_batch_arithmetic_and_typed_fields():
    cfg = load_config(None, ["train.micro_batch_size=8", "train.grad_accum=3", "deepspeed.zero_stage=2",
                             "train.precision=bf16", "optim.grad_clip=0.5"])
    ds = build_ds_config(cfg.train, cfg.optim, cfg.deepspeed, world_size=4)
    assert ds["train_batch_size"] == 8 * 3 * 4
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["gradient_accumulation_steps"] == 3
    assert ds["zero_optimization"] == {"stage": 2} and ds["bf16"] == {"enabled": True}
    assert ds["gradient_clipping"] == 0.5
    default = load_config(None)
    assert build_ds_config(default.train, default.optim, default.deepspeed, 1)["bf16"] == {"enabled": False}  # fp32


def test_ds_config_extra_is_merged_but_cannot_contradict():
    cfg = load_config(None, ['deepspeed.extra={"zero_optimization": {"overlap_comm": true}, "comms_logger": {"enabled": true}}',
                             "deepspeed.zero_stage=3"])
    ds = build_ds_config(cfg.train, cfg.optim, cfg.deepspeed, 2)
    assert ds["zero_optimization"] == {"stage": 3, "overlap_comm": True} and ds["comms_logger"] == {"enabled": True}
    for extra, owner in [
        ('{"train_batch_size": 64}', "train.micro_batch_size"),
        ('{"gradient_clipping": 2.0}', "optim.grad_clip"),
        ('{"zero_optimization": {"stage": 1}}', "deepspeed.zero_stage"),
        ('{"bf16": {"enabled": true}}', "train.precision"),
        ('{"optimizer": {"type": "Adam"}}', "optim."),
    ]:
        with pytest.raises(ConfigError, match=owner.replace(".", r"\.")):
            bad = load_config(None, [f"deepspeed.extra={extra}"])
            build_ds_config(bad.train, bad.optim, bad.deepspeed, 1)


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10)
    lr = lr_schedule(optim, 100)
    assert lr.shape == (100,)
    np.testing.assert_allclose(lr[:10], 1e-3 * np.arange(1, 11) / 10)  # linear, reaching lr at the last warmup step
    assert lr[10] == pytest.approx(1e-3)
    assert np.all(np.diff(lr[10:]) < 0) and lr[-1] == pytest.approx(1e-5, rel=1e-9)
    assert lr_schedule(OptimConfig(warmup_steps=50), 20).shape == (20,)  # warmup longer than the run

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr)
    sched = lambda_lr(opt, lr)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(seen, lr[:12], rtol=1e-12)
    assert "lr_lambdas" in sched.state_dict()  # resumable: DeepSpeed saves and restores this state


def test_cli_overrides_and_validation(tmp_path):
    args = build_parser().parse_args([
        "--config", "configs/tiny.json", "--local_rank=1",
        "--set", "train.max_steps=7", "--set", "objective.align_weight=0", "--set", "deepspeed.zero_stage=3",
        "--set", 'data.train=[{"path": "a/shard-{000000..000003}.tar", "weight": 2}, "b/*.tar"]',
        "--set", "data.heldout=held/", "--resume", "auto",
    ])
    cfg = load_run_config(args)
    assert cfg.train.max_steps == 7 and cfg.objective.align_weight == 0.0 and cfg.deepspeed.zero_stage == 3
    assert [(s.path, s.weight) for s in cfg.data.train] == [("a/shard-{000000..000003}.tar", 2.0), ("b/*.tar", 1.0)]
    assert [s.path for s in cfg.data.heldout] == ["held/"] and cfg.train.resume == "auto"
    for override, message in [
        ("train.checkpoint_every=0", "train.checkpoint_every: must be > 0"),
        ("train.keep_last=0", "train.keep_last: must be > 0"),
        ("eval.max_time_share=1.5", "eval.max_time_share: must be in [0, 1]"),
        ("eval.every=-1", "eval.every: must be >= 0"),
        ("optim.min_lr=1.0", "optim.min_lr: 1.0 exceeds optim.lr"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(None, [override])


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


def test_optimizer_decay_groups():
    model = _model()
    groups = param_groups(model, 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and all(p.dim() < 2 for p in groups[1]["params"])


def test_optimizer_refuses_a_non_finite_step_without_touching_state():
    model = _model()
    opt = build_optimizer(model, OptimConfig(lr=1e-2), check_finite=True)
    assert isinstance(opt, AdamWSkipNonFinite)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    assert not opt.overflow
    before = [p.detach().clone() for p in model.parameters()]
    state_before = {k: v["exp_avg"].clone() for k, v in zip(range(99), opt.state.values())}
    opt.zero_grad()
    model(torch.randn(3, 4)).sum().backward()
    next(model.parameters()).grad[0, 0] = float("nan")
    opt.step()
    assert opt.overflow  # DeepSpeed's engine reads this: step not applied, LR schedule not advanced
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(state_before[i], v["exp_avg"]) for i, v in zip(range(99), opt.state.values()))
    opt.zero_grad()
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    assert not opt.overflow and not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_stop_request_sets_a_flag_and_restores_handlers():
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


def test_matmul_peak_probe_is_short_and_positive():
    torch.manual_seed(5)
    t0 = time.perf_counter()
    peak = measure_matmul_peak("cpu", budget_s=1.0)
    assert time.perf_counter() - t0 < 5.0
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # timing-dependent work must not shift the training RNG
    assert 1e8 < peak < 1e14  # FLOP/s of a CPU
    assert mfu(peak * 0.5, 1.0, peak) == pytest.approx(0.5) and mfu(1.0, 0.0, peak) == 0.0


def test_resharded_data_position_starts_a_fresh_segment_and_fresh_seeds_are_unchanged():
    from unimodal_free.train.reshard import resharded_start_batch
    from unimodal_free.train.rng import rank_seeds

    assert resharded_start_batch(0, 0) == 0  # nothing read yet: nothing to skip
    assert resharded_start_batch(4, 0) == resharded_start_batch(200, 1) == 200
    assert resharded_start_batch(201, 2, segment_batches=100) == 400  # every worker at its segment's start
    assert rank_seeds(3, 1) == (3 + 2 * 1_000_003, 3 * 7919 + 1)  # a fresh run's seeds (step 0)
    assert len({rank_seeds(3, r, s) for r in range(4) for s in range(3)}) == 12
