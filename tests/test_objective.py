"""Objective: loss and metrics, alignment with gathered negatives, collapse guard, short trainings."""

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F

from synthetic_batches import make_batch, part_rows, tiny_config, tiny_specs
from unimodal_free.batch import Batch
from unimodal_free.model import EMATeacher
from unimodal_free.objective import Data2VecStudent, check_collapse
from unimodal_free.objective.alignment import info_nce, paired_rows
from unimodal_free.objective.collapse import row_moments, std_from_moments
from unimodal_free.objective.loss import regression_error


def setup(*overrides, seed=0):
    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, tiny_specs(cfg))
    return cfg, student, EMATeacher(student, cfg.objective)


def test_metrics_keys_and_values():
    cfg, student, teacher = setup()
    batch = make_batch(cfg, seed=0, pairs=6)
    out = student(batch, teacher.module, torch.Generator().manual_seed(0))
    for m in ("image", "speech", "text"):
        for key in ("loss", "target_std", "pred_std", "masked_fraction"):
            assert f"{key}/{m}" in out.metrics
    assert {"padding_fraction", "align_loss", "temperature", "loss/data2vec"} <= set(out.metrics)
    assert out.metrics["masked_fraction/image"] == pytest.approx(cfg.masking.image_ratio, abs=0.05)
    assert out.metrics["masked_fraction/speech"] == pytest.approx(cfg.masking.speech_ratio, abs=0.05)
    assert float(out.metrics["padding_fraction"]) == pytest.approx(batch.padding_waste())
    assert float(out.metrics["temperature"]) == pytest.approx(cfg.objective.init_temperature, rel=1e-5)
    total = out.metrics["loss/data2vec"] + cfg.objective.align_weight * out.metrics["align_loss"]
    torch.testing.assert_close(out.loss.detach(), total)
    assert all(not v.requires_grad for v in out.metrics.values())


def test_regression_error_is_scaled_sum():
    pred, target = torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    cfg = tiny_config()
    torch.testing.assert_close(regression_error(pred, target, cfg.objective), ((pred - target) ** 2).sum(-1) / 4.0)
    cfg.objective.loss = "smooth_l1"
    expected = F.smooth_l1_loss(pred, target, reduction="none", beta=cfg.objective.smooth_l1_beta).sum(-1) / 4.0
    torch.testing.assert_close(regression_error(pred, target, cfg.objective), expected)


def test_across_sample_std_brute_force():
    """The collapse guard's std (row_moments -> std_from_moments) against torch's std over the rows."""
    x = torch.randn(6, 4, 8)
    expected = torch.stack([x[:, n, c].std() for n in range(4) for c in range(8)]).mean()
    torch.testing.assert_close(std_from_moments(row_moments(x, None)).float(), expected)
    valid = torch.rand(6, 4) > 0.3
    valid[:, 0] = True
    pooled = torch.stack([x[b][valid[b]].mean(0) for b in range(6)])  # (6, 8)
    torch.testing.assert_close(std_from_moments(row_moments(x, valid)).float(), pooled.std(0).mean())
    assert std_from_moments(row_moments(x[:1], None)).isnan()  # one row: no across-sample std
    same = torch.randn(1, 4, 8).expand(5, 4, 8)
    assert float(std_from_moments(row_moments(same, None))) == 0.0


@pytest.mark.parametrize("space", ["latents", "elements"])
def test_rare_modality_loss_share_follows_its_weight(space):
    """10 image rows, 1 speech row: each modality's loss is its own mean and the data2vec loss is their
    objective.modality_weights mean, so the one speech row carries w_s / (w_s + w_i) of the loss
    (by rows it would be 1/11); gradients follow the same shares."""
    images = make_batch(tiny_config(), seed=4, pairs=10, modalities=("image",)).parts["image"]
    speech = part_rows(make_batch(tiny_config(), seed=5, pairs=2, modalities=("speech",)).parts["speech"], 0, 1)
    batch = Batch({"image": images, "speech": speech})
    grads = {}
    for weights in ({}, {"speech": 0.25}, {"image": 0.5, "speech": 3.0}, {"speech": 0.0}):
        cfg, student, teacher = setup(f"objective.target_space={space}", "objective.align_weight=0",
                                      f"objective.modality_weights={json.dumps(weights)}")
        out = student(batch, teacher.module, torch.Generator().manual_seed(0))
        w_i, w_s = weights.get("image", 1.0), weights.get("speech", 1.0)
        expected = (w_i * out.metrics["loss/image"] + w_s * out.metrics["loss/speech"]) / (w_i + w_s)
        torch.testing.assert_close(out.metrics["loss/data2vec"], expected)
        out.loss.backward()
        grads[json.dumps(weights)] = student.embed.pad_speech.grad.clone()  # only speech rows reach it
    # The speech-only gradient scales with speech's share: 1/2 at equal weights, 0.25/1.25, 3/3.5, 0.
    share = {"{}": 0.5, '{"speech": 0.25}': 0.2, '{"image": 0.5, "speech": 3.0}': 3 / 3.5, '{"speech": 0.0}': 0.0}
    for key, g in grads.items():
        torch.testing.assert_close(g, grads["{}"] * share[key] / 0.5, rtol=1e-4, atol=1e-7)
    assert grads["{}"].abs().sum() > 0


def test_paired_rows():
    ia, ib = paired_rows([0, 2, -1, 1], [1, 0, -1, 5])
    assert list(zip(ia, ib)) == [(0, 1), (3, 0)]


def clip_loss(za, zb, scale):
    labels = torch.arange(len(za))
    logits = scale * za @ zb.T
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def test_info_nce_with_gathered_negatives_matches_global_loss():
    """Two simulated ranks with different pair counts: the row-weighted mean of their local
    losses (remote negatives via gather_fn) equals the single-process loss over all pairs."""
    g = torch.Generator().manual_seed(0)
    za = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    zb = F.normalize(torch.randn(7, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    splits = [(0, 3), (3, 7)]  # rank 0 has 3 pairs, rank 1 has 4
    both = torch.cat([za, zb], dim=1)
    total = 0.0
    for lo, hi in splits:
        def gather_fn(t, lo=lo, hi=hi):
            return torch.cat([both[:lo], t, both[hi:]]), lo
        total = total + info_nce(za[lo:hi], zb[lo:hi], scale, gather_fn) * (hi - lo)
    torch.testing.assert_close(total / 7, clip_loss(za, zb, scale))
    torch.testing.assert_close(info_nce(za, zb, scale), clip_loss(za, zb, scale))
    with pytest.raises(ValueError, match="offset"):
        info_nce(za, zb, scale, lambda t: torch.cat([t, t]))
    assert info_nce(za[:0], zb[:0], scale) is None


def test_alignment_gradient_reaches_only_local_rows_and_calls_gather_per_pair():
    cfg, student, teacher = setup()
    batch = make_batch(cfg, seed=1, pairs=4)
    calls = []
    remote = torch.randn(5, 2 * cfg.objective.align_dim)

    def gather_fn(t):
        calls.append(t.shape[0])
        return torch.cat([remote, t]), 5

    out = student(batch, teacher.module, torch.Generator().manual_seed(0), gather_fn)
    out.loss.backward()
    assert calls == [4, 4, 4]  # (image, speech), (image, text), (speech, text)
    assert student.align.logit_scale.grad is not None
    # Missing modalities still make the same number of gather calls (collectives stay matched).
    calls.clear()
    only_text = make_batch(cfg, seed=1, pairs=4, modalities=("text",))
    student(only_text, teacher.module, torch.Generator().manual_seed(0), gather_fn)
    assert calls == [0, 0, 0]


def test_alignment_off_costs_nothing():
    cfg, student, teacher = setup("objective.align_weight=0")
    assert student.align is None

    def gather_fn(t):
        raise AssertionError("gather_fn called with alignment off")

    out = student(make_batch(cfg, seed=2, pairs=3), teacher.module, torch.Generator().manual_seed(0), gather_fn)
    assert float(out.metrics["align_loss"]) == 0.0 and "temperature" not in out.metrics


def test_full_input_alignment_pools_unmasked_rows():
    cfg, student, teacher = setup("objective.align_input=full")
    out = student(make_batch(cfg, seed=3, pairs=4), teacher.module, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert math.isfinite(float(out.metrics["align_loss"]))


def test_check_collapse():
    cfg = tiny_config("objective.collapse_warmup_steps=100", "objective.min_target_std=0.1",
                      "objective.min_pred_std=0.01")
    healthy = {"target_std/image": torch.tensor(0.5), "pred_std/image": torch.tensor(0.2), "loss/image": 1.0}
    assert check_collapse(healthy, cfg.objective, 500) is None
    bad = dict(healthy, **{"target_std/speech": torch.tensor(0.05)})
    assert check_collapse(bad, cfg.objective, 99) is None  # still warming up
    msg = check_collapse(bad, cfg.objective, 100)
    assert "speech" in msg and "target_std" in msg and "objective.min_target_std=0.1" in msg
    msg = check_collapse(dict(healthy, **{"pred_std/image": 0.001}), cfg.objective, 200)
    assert "'image'" in msg and "pred_std" in msg and "0.01" in msg


# ---- short CPU trainings ------------------------------------------------------------------


def train(cfg, student, teacher, steps, batches, lr=1e-3):
    """Plain AdamW (+ linear warm-up and clipping, as the trainer does) on a cycled batch stream."""
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    g = torch.Generator().manual_seed(0)
    history = []
    for step in range(steps):
        out = student(batches[step % len(batches)], teacher.module, g)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        warmup.step()
        teacher.update(student, step)
        history.append({k: float(v) for k, v in out.metrics.items()})
    return history


def mean_of(history, key):
    return sum(h[key] for h in history) / len(history)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["latents", "elements"])
def test_training_learns_without_collapse(space):
    torch.set_num_threads(1)
    cfg, student, teacher = setup(f"objective.target_space={space}")
    batches = [make_batch(cfg, seed=s, pairs=8) for s in range(32)]
    start = time.time()
    history = train(cfg, student, teacher, 200, batches)
    assert time.time() - start < 120
    assert mean_of(history[-20:], "loss/data2vec") < 0.5 * mean_of(history[:10], "loss/data2vec")
    assert mean_of(history[-20:], "align_loss") < 0.8 * math.log(8)
    for m in ("image", "speech", "text"):
        std = mean_of(history[-20:], f"target_std/{m}")
        assert std > cfg.objective.min_target_std, (m, std)
    # The trainer applies the guard to metrics averaged over a logging interval, not to one step.
    recent = {key: mean_of(history[-20:], key) for key in history[-1]}
    assert check_collapse(recent, cfg.objective, 200) is None


@pytest.mark.slow
def test_collapsed_encoder_trips_the_guard():
    """A frozen, zeroed element projection makes every input look alike: the guard must fire."""
    torch.set_num_threads(1)
    cfg, student, teacher = setup()
    with torch.no_grad():
        for model in (student, teacher.module):
            model.embed.proj.weight.zero_()
            model.embed.proj.bias.zero_()
    student.embed.proj.requires_grad_(False)
    batches = [make_batch(cfg, seed=s, pairs=8) for s in range(4)]
    history = train(cfg, student, teacher, cfg.objective.collapse_warmup_steps, batches)
    msg = check_collapse(history[-1], cfg.objective, cfg.objective.collapse_warmup_steps)
    assert msg is not None
    for m in ("image", "speech", "text"):
        assert f"target_std of modality '{m}' is " in msg


@pytest.mark.slow
def test_training_on_demo_data(tmp_path):
    """~100 steps on the real demo shards (drawings, espeak speech, captions) through the real reader."""
    from unimodal_free.batch import modality_specs
    from unimodal_free.data.demo.build import ensure_demo_data
    from unimodal_free.data.loading.loader import make_eval_loader, make_train_loader
    from unimodal_free.data.loading.sources import resolve_sources
    from unimodal_free.data.reading.tokenizer import load_tokenizer
    from unimodal_free.model import pooled_embedding

    torch.set_num_threads(1)
    demo = ensure_demo_data(tmp_path / "demo", 96, 16, progress=False)
    cfg = tiny_config(f"data.demo_dir={demo}")
    sources = resolve_sources(cfg.data)
    tok = load_tokenizer(sources.tokenizer_spec(cfg.data))
    torch.manual_seed(0)
    student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, modality_specs(cfg.data, tok.vocab_size))
    teacher = EMATeacher(student, cfg.objective)
    loader = make_train_loader(cfg.data, cfg.train, sources.train, tok, rank=0, world_size=1)
    batches = [next(loader) for _ in range(100)]
    history = train(cfg, student, teacher, 100, batches)
    assert all(math.isfinite(h["loss/data2vec"]) for h in history)
    assert mean_of(history[-10:], "loss/data2vec") < 0.5 * mean_of(history[:10], "loss/data2vec")
    seen = {k.split("/")[1] for h in history for k in h if k.startswith("loss/") and k != "loss/data2vec"}
    assert seen == {"image", "speech", "text"}
    batch = next(iter(make_eval_loader(cfg.data, sources.heldout, tok, 8)))
    emb = pooled_embedding(teacher.module, batch)
    for m, e in emb.items():
        assert e.shape == (batch.parts[m].rows, cfg.objective.align_dim) and torch.isfinite(e).all()


# ---- collapse statistics pooled over a log interval -----------------------------------------------------


def test_row_moments_pooled_over_steps_give_the_std_of_all_rows():
    x = torch.randn(7, 4, 8)
    expected = torch.stack([x[:, n, c].std() for n in range(4) for c in range(8)]).mean()
    chunks = [x[:3], x[3:4], x[4:4], x[4:]]  # steps with 3 rows, 1 row, none, 3 rows
    pooled = sum(row_moments(c, None) for c in chunks)
    assert pooled[0] == 7 and torch.equal(row_moments(x[4:4], None), torch.zeros(1 + 2 * 32, dtype=torch.float64))
    torch.testing.assert_close(std_from_moments(pooled).float(), expected)
    valid = torch.rand(7, 4) > 0.3
    valid[:, 0] = True
    valid[2] = False  # a row without a predicted position does not count
    pooled = row_moments(x[:4], valid[:4]) + row_moments(x[4:], valid[4:])
    assert pooled[0] == 6
    keep = valid.any(1)
    rows = torch.stack([x[b][valid[b]].mean(0) for b in range(7) if keep[b]])  # (6, 8)
    torch.testing.assert_close(std_from_moments(pooled).float(), rows.std(0).mean())
    assert std_from_moments(row_moments(x[:1], None)).isnan()  # one row: no std, and no collapse either


def _minority_stream(cfg, steps: int):
    """Image and text rows every step; a single speech row in odd steps and none in even ones."""
    from unimodal_free.batch import Batch

    for step in range(steps):
        common = make_batch(cfg, seed=step, pairs=6, modalities=("image", "text"))
        parts = dict(common.parts)
        if step % 2:
            parts["speech"] = make_batch(cfg, seed=100 + step, pairs=1, modalities=("speech",)).parts["speech"]
        yield Batch({m: parts[m] for m in ("image", "speech", "text") if m in parts})


@pytest.mark.parametrize("zeroed", [False, True])
def test_guard_on_pooled_interval_statistics(zeroed):
    """The trainer's interval statistics (IntervalStats, one process): a minority modality with 1 row per
    step and none in some steps is judged on its pooled rows once it has objective.collapse_min_rows of them
    and never trips; with fewer it is not judged at all (a 1-row interval's std is undefined). A zeroed
    encoder (every input alike) still trips, the minority modality included."""
    from unimodal_free.train.metrics import IntervalStats
    from unimodal_free.train.state import TrainerState

    cfg, student, teacher = setup("objective.collapse_warmup_steps=0", "objective.min_target_std=0.01",
                                  "objective.min_pred_std=0.001", "objective.collapse_min_rows=8", seed=1)
    if zeroed:
        with torch.no_grad():
            for model in (student, teacher.module):
                model.embed.proj.weight.zero_()
                model.embed.proj.bias.zero_()
    g = torch.Generator().manual_seed(0)

    def interval(steps):
        stats = IntervalStats()
        for batch in _minority_stream(cfg, steps):
            with torch.no_grad():
                out = student(batch, teacher.module, g)
            for key, value in out.moments.items():
                stats.add_moments(key, value)
        _, stds, std_rows, _ = stats.reduce(TrainerState())
        rows = {k.split("/")[1]: n for k, n in std_rows.items() if k.startswith("target/")}
        return stds, rows, check_collapse(stds, cfg.objective, 100, rows)

    stds, rows, message = interval(2)  # one speech row in the interval
    assert rows["speech"] == 1 and math.isnan(stds["target_std/speech"])
    assert message is None or "'speech'" not in message  # not judged: a 1-row sample is no collapse
    stds, rows, message = interval(16)  # 8 speech rows, 96 image and text rows
    assert rows == {"image": 96.0, "speech": 8.0, "text": 96.0}
    if not zeroed:
        assert message is None, message
        assert stds["target_std/speech"] > 0.05, stds
    else:
        for m in ("image", "speech", "text"):
            assert f"target_std of modality '{m}' is " in message


def test_hard_negative_infonce_weights_each_negative_by_exp_beta_similarity():
    """Robinson et al.'s estimate, counted by hand: -log(e^{t s+} / (e^{t s+} + (N-1) sum_j w_j e^{t s_j})),
    w = softmax(beta s_j) over the negatives; beta = 0 is plain InfoNCE to the bit."""
    import math

    import torch.nn.functional as F

    from unimodal_free.objective.alignment import info_nce

    g = torch.Generator().manual_seed(0)
    za = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    zb = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    scale, beta = torch.tensor(3.0), 4.0

    def by_hand(a, b):
        total = 0.0
        for i in range(a.shape[0]):
            s = (a[i] @ b.T).tolist()
            negatives = [s[j] for j in range(len(s)) if j != i]
            w = torch.softmax(beta * torch.tensor(negatives), 0).tolist()
            denominator = math.exp(scale * s[i]) + (len(s) - 1) * sum(wj * math.exp(scale * sj) for wj, sj in zip(w, negatives))
            total += -math.log(math.exp(scale * s[i]) / denominator)
        return total

    expected = (by_hand(za, zb) + by_hand(zb, za)) / (2 * za.shape[0])
    assert info_nce(za, zb, scale, hard_negatives=beta).item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(info_nce(za, zb, scale, hard_negatives=0.0), info_nce(za, zb, scale))
    assert info_nce(za, zb, scale, hard_negatives=beta).item() != pytest.approx(info_nce(za, zb, scale).item(), rel=1e-3)


def test_negative_queue_keeps_the_last_rows_of_each_modality():
    from unimodal_free.objective.negative_queue import NegativeQueue

    queue = NegativeQueue(5)
    assert queue.negatives("text") is None
    rows = torch.arange(16, dtype=torch.float32).view(8, 2)  # row i = (2i, 2i+1)
    queue.push("text", rows[:3])
    assert torch.equal(queue.negatives("text"), rows[:3])
    queue.push("text", rows[3:7])  # 7 pushed, room for 5: rows 2..6 stay
    assert sorted(queue.negatives("text")[:, 0].tolist()) == [4.0, 6.0, 8.0, 10.0, 12.0]
    queue.push("text", rows)  # more than fit at once: the last 5
    assert sorted(queue.negatives("text")[:, 0].tolist()) == [6.0, 8.0, 10.0, 12.0, 14.0]
    queue.push("image", rows[:0])
    assert queue.negatives("image") is None
    with pytest.raises(ValueError, match="objective.negative_queue"):
        NegativeQueue(0)


def test_info_nce_extra_negatives_are_more_columns_of_each_direction():
    g = torch.Generator().manual_seed(0)
    za, zb, qa, qb = (F.normalize(torch.randn(n, 8, generator=g), dim=-1) for n in (4, 4, 3, 6))
    scale = torch.tensor(5.0)
    labels = torch.arange(4)
    expected = (F.cross_entropy(scale * za @ torch.cat([zb, qb]).T, labels)
                + F.cross_entropy(scale * zb @ torch.cat([za, qa]).T, labels)) / 2
    torch.testing.assert_close(info_nce(za, zb, scale, extra_a=qa, extra_b=qb), expected)
    assert info_nce(za, zb, scale, extra_a=qa, extra_b=qb) > info_nce(za, zb, scale)


def test_negative_queue_fills_from_every_rank_and_adds_negatives_in_training_only():
    cfg, student, teacher = setup("objective.negative_queue=64")
    remote = F.normalize(torch.randn(5, 2 * cfg.objective.align_dim), dim=-1)
    calls = []

    def gather_fn(t):
        calls.append(t.shape)
        return torch.cat([remote[:, : t.shape[1]], t]), 5

    batch = make_batch(cfg, seed=1, pairs=4)
    first = student(batch, teacher.module, torch.Generator().manual_seed(0), gather_fn)
    # Three pairs gather (P, 2A); then every modality's rows of all ranks go into the queue.
    assert [s[1] for s in calls] == [2 * cfg.objective.align_dim] * 3 + [cfg.objective.align_dim] * 3
    queue = student.negative_queue
    for m in ("image", "speech", "text"):
        assert queue.negatives(m).shape == (5 + batch.parts[m].values.shape[0], cfg.objective.align_dim)
    second = student(batch, teacher.module, torch.Generator().manual_seed(0), gather_fn)
    second.loss.backward()  # the rows it read stay as they were when it read them
    assert float(second.metrics["align_loss"]) > float(first.metrics["align_loss"])  # same rows, more negatives
    assert not any("queue" in key for key in student.state_dict())
    _, fresh, _ = setup("objective.negative_queue=64")
    fresh.load_state_dict(student.state_dict())
    student.eval(), fresh.eval()
    filled = queue.negatives("text").shape[0]
    evaluated = student(batch, teacher.module, torch.Generator().manual_seed(0), gather_fn)
    assert queue.negatives("text").shape[0] == filled  # eval neither pushes nor reads the queue
    empty = fresh(batch, teacher.module, torch.Generator().manual_seed(0), gather_fn)
    torch.testing.assert_close(evaluated.metrics["align_loss"], empty.metrics["align_loss"])
    assert fresh.negative_queue.negatives("text") is None


def test_info_nce_scores_rows_against_momentum_keys():
    g = torch.Generator().manual_seed(1)
    za, zb, ka, kb = (F.normalize(torch.randn(4, 8, generator=g), dim=-1) for _ in range(4))
    za.requires_grad_(True)
    scale, labels = torch.tensor(5.0), torch.arange(4)
    expected = (F.cross_entropy(scale * za @ kb.T, labels) + F.cross_entropy(scale * zb @ ka.T, labels)) / 2
    loss = info_nce(za, zb, scale, keys=(ka, kb))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert za.grad is not None and ka.grad is None


def test_momentum_keys_are_the_teachers_retrieval_embeddings():
    from unimodal_free.model.pooling import pooled_embedding
    from unimodal_free.objective.alignment import momentum_keys
    from unimodal_free.objective.targets import teacher_layers

    cfg, student, teacher = setup("objective.negative_queue=64")
    batch = make_batch(cfg, seed=4, pairs=5, modalities=("image", "text"))
    keys = momentum_keys(teacher.module, teacher_layers(teacher.module, batch)[-1], batch.parts, student.modalities)
    expected = pooled_embedding(teacher.module, batch)
    for m in ("image", "text"):
        torch.testing.assert_close(keys[m], expected[m])
    assert keys["speech"].shape == (0, cfg.objective.align_dim)
