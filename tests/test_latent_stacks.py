"""model.latent_stacks: one shared latent stack (default, unchanged) or one per modality (shared-vs-separate).

Separate stacks: each modality's rows run only through its own blocks (forward and gradient), everything
outside the latent blocks is the same model, the parameter count grows by exactly (modalities - 1) stacks,
and a real 2-rank DeepSpeed training (ZeRO-2, activation checkpointing) exports weights the eval and the
per-depth analysis load.
"""

from __future__ import annotations

import re

import pytest
import torch

from helpers import model_for, needs_launcher, run, tail, tiny_data, train_cmd, warm_up_deepspeed
from synthetic_batches import make_batch, tiny_config
from unimodal_free.config import ConfigError
from unimodal_free.modalities import MODALITIES
from unimodal_free.model import EMATeacher

PER_MODALITY = "model.latent_stacks=per_modality"
STACK = re.compile(r"encoder\.stacks\.(\d+)\.")


def stack_of(name: str) -> int | None:
    found = STACK.match(name)
    return int(found.group(1)) if found else None


def seeded_loss(*overrides) -> torch.Tensor:
    cfg, model = model_for(*overrides)
    teacher = EMATeacher(model, cfg.objective)
    batch = make_batch(cfg, seed=3, pairs=4)
    return model(batch, teacher.module, torch.Generator().manual_seed(0)).loss


def test_default_is_the_shared_stack_with_its_historical_names_and_seeded_loss():
    """The default model is unchanged: same parameter names and the seeded loss main computes
    (9.529464721679688 on main 841aab2 with this seed, batch and generator)."""
    cfg, model = model_for()
    assert cfg.model.latent_stacks == "shared"
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("encoder.blocks.0.") for n in names)
    assert not any(n.startswith("encoder.stacks.") for n in names)
    torch.testing.assert_close(seeded_loss().item(), 9.529464721679688, rtol=1e-6, atol=0)


def test_unknown_latent_stacks_value_names_the_key():
    with pytest.raises(ConfigError, match=r"--set model\.latent_stacks=both: 'both' is not one of"):
        tiny_config("model.latent_stacks=both")


def test_per_modality_parameters_are_the_shared_model_plus_two_more_stacks():
    """Same width: every parameter outside the latent blocks is the same tensor shape; the latent blocks
    are repeated once per modality, so the count grows by exactly (modalities - 1) x one stack."""
    _, shared = model_for()
    _, separate = model_for(PER_MODALITY)
    shapes = {n: p.shape for n, p in shared.named_parameters()}
    sep = {n: p.shape for n, p in separate.named_parameters()}
    stack = {n: s for n, s in shapes.items() if n.startswith("encoder.blocks.")}
    assert stack
    assert {n: s for n, s in shapes.items() if n not in stack} == {n: s for n, s in sep.items() if stack_of(n) is None}
    for i in range(len(MODALITIES)):
        own = {n.replace(f"encoder.stacks.{i}.", "encoder.blocks."): s for n, s in sep.items() if stack_of(n) == i}
        assert own == stack
    stack_numel = sum(s.numel() for s in stack.values())
    total = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) == total + (len(MODALITIES) - 1) * stack_numel


@pytest.mark.parametrize("modalities", [(m,) for m in MODALITIES] + [tuple(MODALITIES)], ids="+".join)
def test_each_modality_gradient_reaches_only_its_own_stack(modalities):
    """A real backward of the full loss (data2vec + alignment): the stack of every modality in the batch
    gets a non-zero gradient, the stacks of the others exactly zero (they run on zero rows, so every rank
    still reduces the same parameter set)."""
    cfg, model = model_for(PER_MODALITY)
    teacher = EMATeacher(model, cfg.objective)
    batch = make_batch(cfg, seed=3, pairs=4, modalities=modalities)
    out = model(batch, teacher.module, torch.Generator().manual_seed(0))
    out.loss.backward()
    seen = set()
    for name, p in model.named_parameters():
        i = stack_of(name)
        if i is None:
            continue
        seen.add(i)
        assert p.grad is not None, name
        if model.modalities[i] in modalities:
            assert p.grad.abs().sum() > 0, name
        else:
            assert not p.grad.any(), name
    assert seen == set(range(len(MODALITIES)))


def test_separate_stacks_keep_rows_apart_and_differ_from_each_other():
    """Every block output of a mixed batch equals each modality encoded alone; and each modality really
    runs its own stack (giving text's stack to the image rows changes their latents)."""
    cfg, model = model_for(PER_MODALITY)
    model.eval()
    batch = make_batch(cfg, seed=6, pairs=4)
    mixed = model.encode(batch.parts)
    start = 0
    for m, p in batch.parts.items():
        alone = model.encode({m: p})
        for x, y in zip(mixed, alone):
            torch.testing.assert_close(x[start:start + p.rows], y, rtol=1e-5, atol=1e-5)
        start += p.rows
    image = batch.parts["image"]
    inputs = [(model.embed("image", image.values, image.coords, image.padding), image.padding)]
    own = model.encoder(inputs, [model.modalities.index("image")])[-1]
    other = model.encoder(inputs, [model.modalities.index("text")])[-1]
    torch.testing.assert_close(own, mixed[-1][:image.rows])
    assert not torch.allclose(own, other)
    with pytest.raises(ValueError, match="one stack id per input"):
        model.encoder(inputs)


@pytest.mark.slow
@needs_launcher
@pytest.mark.parametrize("stage", [2, 3])
def test_per_modality_stacks_train_under_zero_with_checkpointing_and_the_export_evaluates(tmp_path, stage):
    """2 CPU ranks, ZeRO-2 or 3, activation checkpointing, 4 steps: the export holds three stacks, loads
    strictly into the recorded config, and the retrieval eval and the per-depth analysis run on it."""
    from unimodal_free.experiments.blockwise import blockwise
    from unimodal_free.experiments.runner import evaluate_arm, load_trained
    from unimodal_free.store.export import EXPORT_NAME
    from unimodal_free.store.weights import load_weights

    warm_up_deepspeed()
    data = tiny_data(tmp_path.parent.parent / "train_runs")
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    cmd = train_cmd(data, run_dir, stage, PER_MODALITY, "model.activation_checkpointing=true", "train.max_steps=4",
                    "eval.every=0")
    assert run(cmd, log) == 0, tail(log)
    weights = load_weights(run_dir / EXPORT_NAME)
    assert weights.cfg.model.latent_stacks == "per_modality"
    stacks = {stack_of(k) for k in weights.student} - {None}
    assert stacks == set(range(len(MODALITIES)))
    assert not any(k.startswith("encoder.blocks.") for k in weights.student)
    model, _, _ = load_trained(run_dir, "student", torch.device("cpu"))
    assert len(model.encoder.latent_stacks()) == len(MODALITIES)
    # Every stack is in the optimizer: the student moved away from its EMA teacher.
    for i in range(len(MODALITIES)):
        key = f"encoder.stacks.{i}.0.attn.qkv.weight"
        assert not torch.equal(weights.student[key], weights.teacher[key]), key
    results = evaluate_arm(run_dir, device=torch.device("cpu"))
    assert {f"{a}_to_{b}" for a in MODALITIES for b in MODALITIES if a != b} <= set(results)
    # The per-depth analysis reads the same export: its top level ("head") is exactly the eval's retrieval.
    levels = blockwise(run_dir, "teacher", device=torch.device("cpu"))
    assert [level.name for level in levels] == ["block 1", "block 2", "block 3", "final", "head"]
    assert levels[-1].retrieval == results
    assert all(0 <= v <= 1 + 1e-9 for level in levels for v in level.cka.values())
