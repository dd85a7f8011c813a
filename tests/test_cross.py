"""objective.cross_weight: the cross-modal heads, their targets, their loss and its share of the step's loss."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from synthetic_batches import MAKERS, make_batch, tiny_config, tiny_specs
from unimodal_free.batch import Batch, collate_elements, split_rows
from unimodal_free.model import EMATeacher
from unimodal_free.objective import Data2VecStudent, make_all_views
from unimodal_free.objective.loss import regression_error
from unimodal_free.objective.targets import pooled_targets, teacher_layers

# Rows per modality as pair ids (None: no partner). image-speech: one pair, image-text: two,
# speech-text: none (their heads run on zero rows), and each modality has a row without a partner.
MIXED = {"image": ["p0", "p1", "p2", None], "speech": ["p1", None], "text": ["p0", "p2", "p3"]}


def student_for(*overrides, specs=None, seed=0):
    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    return cfg, Data2VecStudent(cfg.model, cfg.objective, cfg.masking, specs or tiny_specs(cfg))


def mixed_batch(cfg, rows=MIXED, seed=0) -> Batch:
    """A batch whose rows pair as ``rows`` says (its pair ids); the content is the synthetic factors'."""
    g = torch.Generator().manual_seed(seed)
    samples = [(MAKERS[name](cfg, k % 8, 0.1 * k, g), f"{name}{k}", pair)
               for name, pairs in rows.items() for k, pair in enumerate(pairs)]
    return collate_elements(samples)


def by_hand_pairs(batch: Batch, a: str, b: str) -> list[tuple[int, int]]:
    """(row of a, row of b) of every two rows that share a pair id, from the host lists."""
    return [(i, j) for i, pa in enumerate(batch.parts[a].pairs) for j, pb in enumerate(batch.parts[b].pairs)
            if pa >= 0 and pa == pb] if a in batch.parts and b in batch.parts else []


def test_no_heads_and_the_same_keys_without_cross_weight_one_head_per_ordered_pair_with_it():
    cfg, plain = student_for()
    assert cfg.objective.cross_weight == 0 and plain.cross_predictor is None
    assert not [k for k in plain.state_dict() if k.startswith("cross_predictor")]
    _, cross = student_for("objective.cross_weight=0.5")
    assert [k for k in cross.state_dict() if not k.startswith("cross_predictor.")] == list(plain.state_dict())
    for specs in (tiny_specs(cfg), {m: s for m, s in tiny_specs(cfg).items() if m != "speech"}):
        _, model = student_for("objective.cross_weight=0.5", specs=specs)
        expected = {f"{a}_to_{b}" for a, b in itertools.permutations(model.modalities, 2)}
        assert set(model.cross_predictor.heads) == expected
        D = cfg.model.d_model
        assert all(h.weight.shape == (D, D) and h.bias.shape == (D,) for h in model.cross_predictor.heads.values())


def test_pooled_targets_are_the_layer_normed_slot_mean_of_the_teachers_final_latents():
    cfg, student = student_for("objective.cross_weight=1")
    teacher = EMATeacher(student, cfg.objective).module
    batch = make_batch(cfg, seed=1, pairs=3, modalities=("image", "text"))
    layers = teacher_layers(teacher, batch)
    out = pooled_targets(teacher, layers, batch, student.modalities)
    assert list(out) == student.modalities
    final = teacher.norm(layers[-1]).mean(1)  # (sum B_m, D)
    expected = split_rows(F.layer_norm(final, final.shape[-1:]), batch.parts)
    for name in ("image", "text"):
        torch.testing.assert_close(out[name], expected[name])
        assert out[name].shape == (3, cfg.model.d_model)
    assert out["speech"].shape == (0, cfg.model.d_model)


def test_forward_cross_is_the_mean_regression_error_over_paired_rows_and_directions():
    cfg, student = student_for("objective.cross_weight=1")
    teacher = EMATeacher(student, cfg.objective).module
    batch = mixed_batch(cfg)
    views = make_all_views(batch, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
    latents = student.forward_student(views).latents
    targets = pooled_targets(teacher, teacher_layers(teacher, batch), batch, student.modalities)
    loss = student.forward_cross(batch, views, latents, targets)

    R = cfg.objective.num_views
    pooled = {m: z.reshape(-1, R, *z.shape[1:]).mean((1, 2)) for m, z in latents.items()}  # (B_m, D)
    errors = []
    for a, b in itertools.combinations(student.modalities, 2):
        for i, j in by_hand_pairs(batch, a, b):
            for src, row_src, dst, row_dst in ((a, i, b, j), (b, j, a, i)):
                pred = student.cross_predictor.heads[f"{src}_to_{dst}"](pooled[src][row_src])  # (D,)
                errors.append(regression_error(pred, targets[dst][row_dst], cfg.objective))
    assert len(errors) == 2 * 3  # image-speech 1 pair, image-text 2, speech-text none; both directions
    torch.testing.assert_close(loss, torch.stack(errors).mean())


def losses_with_and_without_cross(weight: float, batch: Batch):
    """(LossOutput with objective.cross_weight=weight, LossOutput at 0, the cross model): same weights,
    teacher and views."""
    cfg, cross = student_for(f"objective.cross_weight={weight}")
    _, plain = student_for()
    plain.load_state_dict({k: v for k, v in cross.state_dict().items() if not k.startswith("cross_predictor.")})
    teacher = EMATeacher(cross, cfg.objective).module
    views = make_all_views(batch, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
    return cross(batch, teacher, None, views=views), plain(batch, teacher, None, views=views), cross


def test_loss_adds_cross_weight_times_cross_loss_and_the_paired_heads_get_gradients():
    cfg = tiny_config()
    out, base, model = losses_with_and_without_cross(0.7, mixed_batch(cfg))
    assert "cross_loss" not in base.metrics and float(out.metrics["cross_loss"]) > 0
    torch.testing.assert_close(out.loss, base.loss + 0.7 * out.metrics["cross_loss"])
    out.loss.backward()
    for name, head in model.cross_predictor.heads.items():
        paired = "speech" not in name or "image" in name  # speech-text: no pair in MIXED
        for p in head.parameters():
            assert p.grad is not None, name
            assert bool(p.grad.any()) == paired, name


@pytest.mark.parametrize("modality", ["image", "text"])
def test_a_one_modality_batch_gives_every_parameter_a_gradient_zero_for_the_cross_heads(modality):
    """Every rank reduces the same gradients: with nothing to pair, every head still runs (on zero rows)."""
    cfg = tiny_config()
    out, base, model = losses_with_and_without_cross(1.0, make_batch(cfg, seed=2, pairs=3, modalities=(modality,)))
    assert float(out.metrics["cross_loss"]) == 0.0
    torch.testing.assert_close(out.loss, base.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if name.startswith("cross_predictor."):
            assert not p.grad.any(), name
