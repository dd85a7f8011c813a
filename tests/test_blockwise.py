"""Per-depth embeddings and cross-modal CKA of the 'where alignment appears' experiment."""

from __future__ import annotations

import pytest
import torch

from helpers import model_for
from synthetic_batches import make_batch
from unimodal_free.experiments.blockwise import cross_modal_cka, level_embeddings, level_names
from unimodal_free.model import pooled_embedding


@pytest.mark.parametrize("sets", [(), ("objective.align_weight=0",), ("model.latent_stacks=per_modality",)],
                         ids=["aligned", "data2vec-only", "per-modality"])
def test_levels_are_every_block_then_what_the_eval_embeds(sets):
    """One level per latent block, then 'final' == the eval's pooled latents and 'head' == the eval's
    retrieval embedding (only with an alignment head); the blocks are the model's own per-block latents."""
    cfg, model = model_for(*sets)
    model.eval()
    batch = make_batch(cfg, seed=2, pairs=5)
    names = level_names(model)
    levels = level_embeddings(model, batch)
    aligned = cfg.objective.align_weight > 0
    assert names == [f"block {i + 1}" for i in range(cfg.model.num_blocks)] + ["final"] + (["head"] if aligned else [])
    raw, projected = pooled_embedding(model, batch, project=False), pooled_embedding(model, batch)
    blocks = model.encode(batch.parts)
    start = 0
    for m, p in batch.parts.items():
        assert len(levels[m]) == len(names)
        torch.testing.assert_close(levels[m][cfg.model.num_blocks], raw[m])
        if aligned:
            torch.testing.assert_close(levels[m][-1], projected[m])
        block = blocks[0][start:start + p.rows].mean(1)  # (rows, D)
        torch.testing.assert_close(levels[m][0], torch.nn.functional.normalize(block, dim=-1))
        start += p.rows


def test_cross_modal_cka_matches_rows_by_pair_id():
    """Rows in a different order, an extra unpaired row and a duplicate caption do not change the score:
    the CKA is over the pair ids both modalities have, first row of each."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    ids = torch.arange(40)
    perm = torch.randperm(40, generator=g)
    text = torch.cat([(x @ q)[perm], torch.randn(1, 6, generator=g), (x @ q)[perm][:1] * 0])  # extra id, duplicate
    text_ids = torch.cat([ids[perm], torch.tensor([99]), ids[perm][:1]])
    out = cross_modal_cka({"image": x, "text": text, "speech": torch.randn(40, 6, generator=g)},
                          {"image": ids, "text": text_ids, "speech": ids})
    assert set(out) == {"image-speech", "image-text", "speech-text"}
    assert out["image-text"] == pytest.approx(1.0, abs=1e-9)
    assert out["image-speech"] < 0.5  # unrelated features


def test_shuffled_cka_breaks_the_pairs():
    """With one side's rows shuffled, an exact copy no longer scores 1: the reference level of unpaired rows."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 6, generator=g)
    ids = torch.arange(200)
    emb, pair_ids = {"image": x, "text": x.clone()}, {"image": ids, "text": ids}
    assert cross_modal_cka(emb, pair_ids)["image-text"] == pytest.approx(1.0)
    assert cross_modal_cka(emb, pair_ids, shuffled=True)["image-text"] < 0.2
