"""The joint model: every modality and mixed batches, invariances, adapter errors, pooling, FLOPs."""

import copy
import itertools

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from helpers import model_for
from synthetic_batches import VOCAB, make_batch, tiny_config, tiny_specs
from unimodal_free.batch import Batch, ModalitySpec, split_rows
from unimodal_free.modalities import MODALITIES
from unimodal_free.model import EMATeacher, JointModel, build_model, pooled_embedding
from unimodal_free.model.embedding import ModalityAdapter
from unimodal_free.objective import make_all_views, step_flops
from unimodal_free.objective.alignment import batch_moments


def with_padding_changed(batch: Batch, seed: int) -> Batch:
    """Same batch, random (even NaN) content in every padded slot."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(batch)
    for p in out.parts.values():
        pad = p.padding
        if p.values.dtype == torch.long:
            p.values[pad] = torch.randint(0, VOCAB, (int(pad.sum()),), generator=g)
        else:
            p.values[pad] = float("nan")
        p.coords[pad] = torch.rand(int(pad.sum()), p.coords.shape[-1], generator=g)
    return out


def specific_to(name: str) -> str | None:
    """The modality a parameter belongs to (None: shared by all modalities)."""
    for m in MODALITIES:
        if name in (f"embed.pad_{m}", f"readout.embed_{m}") or name.startswith(f"embed.adapters.{m}."):
            return m
    return None


SUBSETS = [subset for k in (1, 2, 3) for subset in itertools.combinations(MODALITIES, k)]


@pytest.mark.parametrize("summary", ["none", "max"])
@pytest.mark.parametrize("align", ["off", "masked", "full"])
@pytest.mark.parametrize("space", ["latents", "elements"])
@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_every_parameter_gets_a_gradient_whatever_modalities_the_batch_holds(space, modalities, align, summary):
    """Same parameter set every step (data-parallel ranks reduce the same gradients): those of absent
    modalities are exactly zero, every other one is non-zero; the loss is what it is without them."""
    sets = [f"objective.target_space={space}"]
    sets += ["objective.align_weight=0"] if align == "off" else [f"objective.align_input={align}"]
    cfg, model = model_for(*sets, f"model.element_summary={summary}")
    teacher = EMATeacher(model, cfg.objective)
    batch = make_batch(cfg, seed=3, pairs=4, modalities=modalities)
    out = model(batch, teacher.module, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        owner = specific_to(name)
        if owner is not None and owner not in modalities:
            assert not p.grad.any(), name
        elif name.startswith("align.") and len(modalities) == 1:
            assert not p.grad.any(), name  # nothing to align
        else:
            assert p.grad.abs().sum() > 0, name
    assert {specific_to(n) for n, _ in model.named_parameters()} == {None, *MODALITIES}  # each one is checked


@pytest.mark.parametrize("summary", ["none", "max"])
def test_latents_invariant_to_padding_content(summary):
    cfg, model = model_for(f"model.element_summary={summary}")
    model.eval()
    batch = make_batch(cfg, seed=4, pairs=6)
    assert all(p.padding.any() for m, p in batch.parts.items() if m != "image")
    a = model.encode(batch.parts)
    b = model.encode(with_padding_changed(batch, 1).parts)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    e1, e2 = pooled_embedding(model, batch), pooled_embedding(model, with_padding_changed(batch, 2))
    assert all(torch.equal(e1[m], e2[m]) for m in e1)


@pytest.mark.parametrize("summary", ["none", "max"])
@pytest.mark.parametrize("space", ["latents", "elements"])
def test_student_invariant_to_masked_and_padded_content(space, summary):
    cfg, model = model_for(f"objective.target_space={space}", "objective.num_views=1", "objective.align_weight=0",
                           f"model.element_summary={summary}")
    model.eval()
    batch = make_batch(cfg, seed=5, pairs=5)
    views = make_all_views(batch, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
    changed = with_padding_changed(batch, 3)
    g = torch.Generator().manual_seed(9)
    for m, p in changed.parts.items():
        hidden = views[m].mask  # R = 1: view row == batch row
        if p.values.dtype == torch.long:
            p.values[hidden] = torch.randint(0, VOCAB, (int(hidden.sum()),), generator=g)
        else:
            p.values[hidden] = torch.randn(int(hidden.sum()), p.values.shape[-1], generator=g) * 10
    views2 = make_all_views(changed, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
    assert all(torch.equal(views[m].mask, views2[m].mask) for m in views)
    out1, out2 = model.forward_student(views), model.forward_student(views2)
    for m in views:
        assert torch.equal(out1.predictions[m], out2.predictions[m])
    # ... while the teacher, which sees the full input, does change.
    assert not torch.equal(model.encode(batch.parts)[-1], model.encode(changed.parts)[-1])


def test_mixed_batch_equals_separate_sub_batches():
    """Cross-attention per modality, one latent stack: rows do not interact across modalities."""
    cfg, model = model_for()
    model.eval()
    batch = make_batch(cfg, seed=6, pairs=4)
    joint = model.encode(batch.parts)[-1]
    start = 0
    for m, p in batch.parts.items():
        alone = model.encode({m: p})[-1]
        torch.testing.assert_close(joint[start:start + p.rows], alone, rtol=1e-5, atol=1e-5)
        start += p.rows


def test_pooled_embedding_shapes_and_norm():
    cfg, model = model_for()
    batch = make_batch(cfg, seed=7, pairs=3)
    emb = pooled_embedding(model, batch)
    raw = pooled_embedding(model, batch, project=False)
    for m, p in batch.parts.items():
        assert emb[m].shape == (p.rows, cfg.objective.align_dim)
        assert raw[m].shape == (p.rows, cfg.model.d_model)
        torch.testing.assert_close(emb[m].norm(dim=-1), torch.ones(p.rows))
    teacher = EMATeacher(model, cfg.objective)
    assert pooled_embedding(teacher, batch)["text"].shape == emb["text"].shape  # wrappers unwrap


def test_adapters_fail_fast_naming_the_value():
    with pytest.raises(ValueError, match="'weird'.*value_dim \\(8\\).*vocab_size \\(5\\)"):
        ModalityAdapter(ModalitySpec("weird", 1, value_dim=8, vocab_size=5), 4, 16.0, 8)
    with pytest.raises(ValueError, match="coord_dims must be > 0, got 0"):
        ModalityAdapter(ModalitySpec("speech", 0, value_dim=8), 4, 16.0, 8)
    adapter = ModalityAdapter(ModalitySpec("speech", 1, value_dim=8), 4, 16.0, 8)
    assert adapter.width == 8 + 1 * (2 * 4 + 1)
    with pytest.raises(ValueError, match="'speech': elements have 7 values, expected 8"):
        adapter(torch.zeros(1, 3, 7), torch.zeros(1, 3, 1))
    cfg = tiny_config()
    with pytest.raises(ValueError, match="'video'"):
        build_model(cfg.model, cfg.objective, {"video": ModalitySpec("video", 3, value_dim=4)})


def test_modality_specific_share_is_small():
    cfg, model = model_for()
    specific = sum(p.numel() for n, p in model.named_parameters()
                   if "pad_" in n or "token_embed" in n or "embed_" in n)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < specific / total < 0.1


@pytest.mark.parametrize("summary", ["none", "max"])
def test_step_flops_matches_flop_counter(summary):
    """Analytic teacher FLOPs == torch's FlopCounter on a padding-free batch.

    The math SDPA backend is used so attention's matmuls are visible to the counter.
    """
    cfg, model = model_for("objective.num_views=1", f"model.element_summary={summary}")
    batch = make_batch(cfg, seed=8, pairs=1, modalities=("image",))
    assert not batch.parts["image"].padding.any()
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        model.encode(batch.parts)
    analytic = step_flops(cfg.model, cfg.objective, cfg.masking, cfg.data, batch)
    assert analytic["teacher"] == counter.get_total_flops()
    cfg4 = tiny_config("objective.num_views=4", f"model.element_summary={summary}")
    ratio = step_flops(cfg4.model, cfg4.objective, cfg4.masking, cfg4.data, batch)["student"] / analytic["student"]
    assert ratio == pytest.approx(4.0)
    assert analytic["student"] > analytic["teacher"]


def test_alignment_norm_is_per_modality_and_retrieval_embeddings_never_depend_on_the_batch():
    cfg, model = model_for()
    norms = {m: getattr(model.align, f"norm_{m}") for m in model.modalities}
    assert all(not n.affine and n.running_mean.shape == (cfg.model.d_model,) for n in norms.values())
    batch = make_batch(cfg, seed=8, pairs=4)
    # A training step normalises with batch statistics and moves each modality's running statistics.
    before = {m: n.running_mean.clone() for m, n in norms.items()}
    model.train()
    views = make_all_views(batch, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
    model.forward_alignment(batch, views, model.forward_student(views).latents)
    for m in batch.parts:
        assert not torch.equal(norms[m].running_mean, before[m]), m
    # Retrieval embeddings use the running statistics, in train mode too: one row alone == the same row in its batch.
    running = {m: n.running_mean.clone() for m, n in norms.items()}
    full = pooled_embedding(model, batch)
    for m, p in batch.parts.items():
        one = Batch({m: type(p)(p.values[:1], p.coords[:1], p.padding[:1], p.pair_index[:1], p.keys[:1])})
        torch.testing.assert_close(pooled_embedding(model, one)[m], full[m][:1], rtol=1e-5, atol=1e-5)
        assert torch.equal(norms[m].running_mean, running[m]), m  # embedding never updates the statistics
    # A batch-statistics normalisation makes each feature zero-mean across the batch's rows.
    pooled = torch.randn(6, cfg.model.d_model) * 5 + 3
    normed = torch.nn.functional.batch_norm(pooled, None, None, training=True)
    moments = batch_moments(model.align, {"image": pooled}, model.modalities)
    torch.testing.assert_close(model.align.embed("image", pooled, moments["image"]), model.align.proj(normed),
                               rtol=1e-4, atol=1e-4)


def test_standardize_values_per_row_over_real_elements_only():
    from unimodal_free.model.embedding import standardize_values
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 7, 5, generator=g) * 4 + torch.randn(3, 1, 5, generator=g) * 10  # per-row offsets
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = True
    padding[2, 2:] = True
    noisy = values.clone()
    noisy[padding] = float("nan")  # padded content never counts
    out = standardize_values(noisy, padding)
    for i in range(3):
        real = out[i][~padding[i]]  # (M_i, C)
        torch.testing.assert_close(real.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
        torch.testing.assert_close(real.pow(2).mean(), torch.tensor(1.0), atol=1e-3, rtol=0)
        # The same as standardising the row alone: rows never mix.
        alone = standardize_values(values[i:i + 1, ~padding[i]], torch.zeros(1, int((~padding[i]).sum()), dtype=torch.bool))
        torch.testing.assert_close(real, alone[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(out[padding], torch.zeros(int(padding.sum()), 5))
    # A constant shift of every element of a row (a background colour) disappears.
    torch.testing.assert_close(standardize_values(values + 3.0, torch.zeros(3, 7, dtype=torch.bool)),
                               standardize_values(values, torch.zeros(3, 7, dtype=torch.bool)), rtol=1e-4, atol=1e-4)


def test_standardized_model_ignores_padding_and_leaves_text_ids_alone():
    cfg, model = model_for("model.standardize_values=true")
    assert model.embed.standardize
    model.eval()
    batch = make_batch(cfg, seed=9, pairs=3)
    ref = model.encode(batch.parts)[-1]
    torch.testing.assert_close(model.encode(with_padding_changed(batch, seed=1).parts)[-1], ref)
    p = batch.parts["text"]
    on = model.embed("text", p.values, p.coords, p.padding)
    model.embed.standardize = False
    torch.testing.assert_close(on, model.embed("text", p.values, p.coords, p.padding))  # token ids are not values
    model.embed.standardize = True
    # Image rows: shifting every patch of a row by a constant (a flat background change) changes nothing.
    img = batch.parts["image"]
    shifted = model.embed("image", img.values + 0.5, img.coords, img.padding)
    torch.testing.assert_close(shifted, model.embed("image", img.values, img.coords, img.padding), rtol=1e-4, atol=1e-4)


def test_alignment_head_runs_in_bf16():
    cfg, model = model_for()
    model = model.to(torch.bfloat16)
    batch = make_batch(cfg, seed=10, pairs=3)
    views = make_all_views(batch, cfg.masking, cfg.objective.num_views, torch.Generator().manual_seed(0))
    align_loss, _ = model.forward_alignment(batch, views, model.forward_student(views).latents)
    assert torch.isfinite(align_loss.float())
    emb = pooled_embedding(model, batch)
    assert all(torch.isfinite(e).all() for e in emb.values())


@pytest.mark.parametrize("space", ["latents", "elements"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(space):
    """model.activation_checkpointing recomputes the blocks in backward: the same loss and gradients
    (rounding of the recomputed ops: rtol 1e-4 / atol 1e-6), dropout included, and less kept."""
    from unimodal_free.bench.memory import step_tensor_peak
    from unimodal_free.bench.ours import OursHarness
    from unimodal_free.bench.synthetic import synthetic_batch

    results = {}
    for on in (False, True):
        cfg = tiny_config(f"objective.target_space={space}", "model.dropout=0.1",
                          f"model.activation_checkpointing={str(on).lower()}")
        harness = OursHarness(cfg, "cpu", seed=0)
        batch = synthetic_batch(cfg.data, harness.specs, 6, seed=0)
        torch.manual_seed(1)  # dropout: checkpointing replays the RNG state in the recomputation
        out = harness.student(batch, harness.teacher.module, torch.Generator().manual_seed(0))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in harness.student.named_parameters()}
        results[on] = (out.loss.detach(), grads, step_tensor_peak(harness, batch, cfg))
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-6, atol=1e-6)
    for name, g in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], g, rtol=1e-4, atol=1e-6, msg=name)
    assert results[True][2] < 0.75 * results[False][2], (results[True][2], results[False][2])


@pytest.mark.parametrize("sets", [(), ("objective.target_space=elements", "objective.align_weight=0"),
                                  ("model.latent_stacks=per_modality",)], ids=["latents+align", "elements", "stacks"])
def test_student_task_is_the_plain_model_key_for_key_and_draw_for_draw(sets):
    """Training builds Data2VecStudent, eval/export build_model: the same state-dict keys (old checkpoints,
    exports and model folders load into either) and, seeded alike, the same initial weights (the task adds
    no module, so init_weights draws from the RNG in the same order)."""
    cfg, student = model_for(*sets, seed=3)
    torch.manual_seed(3)
    plain = build_model(cfg.model, cfg.objective, tiny_specs(cfg))
    assert type(plain) is JointModel and isinstance(student, JointModel)
    a, b = student.state_dict(), plain.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert {k.split(".")[0] for k in a} <= {"embed", "encoder", "norm", "predictor", "readout", "head", "align"}


def test_model_package_imports_no_objective_and_no_masking():
    """model/ is tensors in, latents out: it never imports the objective (masking, losses, the task)."""
    import ast
    from pathlib import Path

    import unimodal_free.model
    import unimodal_free.objective

    imported = {}
    for path in Path(unimodal_free.model.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported[node.module] = path.name
            elif isinstance(node, ast.Import):
                imported.update({alias.name: path.name for alias in node.names})
    bad = {m: f for m, f in imported.items() if m.startswith(("unimodal_free.objective", "unimodal_free.masking"))}
    assert not bad, bad
    assert not hasattr(unimodal_free.objective, "pooled_embedding")  # pooling is the model's


def test_split_rows_undoes_the_concatenation_of_every_modality():
    cfg = tiny_config()
    batch = make_batch(cfg, seed=11, pairs=3, modalities=("image", "text"))
    x = torch.cat([p.coords[:, :1, 0] for p in batch.parts.values()])  # (sum B_m, 1)
    split = split_rows(x, batch.parts)
    assert list(split) == list(batch.parts)
    for m, p in batch.parts.items():
        assert torch.equal(split[m], p.coords[:, :1, 0])


def test_element_summary_is_the_max_over_real_elements_of_each_row():
    """A row's summary depends on its real elements only, is the max of their per-element features
    (so it does not change when an element is repeated, unlike a mean), and a row without elements gets 0."""
    from unimodal_free.model.summary import ElementSummary
    torch.manual_seed(0)
    summary = ElementSummary(8)
    x = torch.randn(2, 5, 8)
    padding = torch.tensor([[False, False, False, True, True], [True] * 5])
    out = summary(x, padding)
    features = summary.proj(torch.nn.functional.gelu(summary.fc(summary.norm(x[0, :3]))))  # (3, 8)
    torch.testing.assert_close(out[0], features.amax(0))
    assert torch.equal(out[1], torch.zeros(8))
    repeated = torch.cat([x[:1, :3], x[:1, :1]], dim=1)  # the first element twice
    torch.testing.assert_close(summary(repeated, torch.zeros(1, 4, dtype=torch.bool))[0], out[0])
