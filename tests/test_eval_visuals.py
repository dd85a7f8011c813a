"""Eval pictures: thumbnails rebuilt from patch elements, heatmaps, projector entry, TensorBoard read-back."""

import numpy as np
import pytest
import torch
from PIL import Image

from unimodal_free.data.elements import image_elements
from unimodal_free.eval.embed import EmbeddingSet
from unimodal_free.eval.report import flat_metrics, format_table
from unimodal_free.eval.retrieval import cross_modal_retrieval
from unimodal_free.eval.thumbnails import heatmap, unpatchify_thumbnail
from unimodal_free.eval.visuals import projector_entry, similarity_images, write_visuals


def test_thumbnail_inverts_patchify_in_any_row_order():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    e = image_elements(Image.fromarray(pixels), image_size=32, patch_size=8)
    perm = torch.randperm(e.values.shape[0], generator=torch.Generator().manual_seed(0))
    thumb = unpatchify_thumbnail(e.values[perm], e.coords[perm], patch_size=8, size=32)  # (3, 32, 32)
    want = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    assert thumb.shape == (3, 32, 32)
    assert torch.allclose(thumb, want, atol=1e-5)
    # Downsampled thumbnails average 2x2 blocks.
    small = unpatchify_thumbnail(e.values, e.coords, patch_size=8, size=16)
    assert torch.allclose(small, torch.nn.functional.avg_pool2d(want[None], 2)[0], atol=1e-5)


def test_thumbnail_refuses_wrong_patch_size():
    e = image_elements(Image.new("RGB", (16, 16)), image_size=16, patch_size=8)
    with pytest.raises(ValueError, match="patch_size=4"):
        unpatchify_thumbnail(e.values, e.coords, patch_size=4)


def test_heatmap_colours_and_scale():
    img = heatmap(torch.tensor([[0.0, 1.0], [0.5, 0.5]]), cell=3)
    assert img.shape == (6, 6, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (68, 1, 84)  # viridis low end
    assert tuple(img[0, 5]) == (253, 231, 37)  # viridis high end
    assert (heatmap(torch.ones(2, 2)) == heatmap(torch.ones(2, 2))[0, 0]).all()  # constant: no NaN, one colour


def toy_set(num_pairs=6, dim=8, captions=2):
    """Aligned toy embeddings: text rows near their image, speech rows for half the pairs."""
    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(num_pairs, dim, generator=gen), dim=1)
    text_ids = torch.arange(num_pairs).repeat_interleave(captions)
    speech_ids = torch.arange(0, num_pairs, 2)
    noisy = lambda x: torch.nn.functional.normalize(x + 0.05 * torch.randn(x.shape, generator=gen), dim=1)
    return EmbeddingSet(
        embeddings={"image": base, "speech": noisy(base[speech_ids]), "text": noisy(base[text_ids])},
        pair_ids={"image": torch.arange(num_pairs), "speech": speech_ids, "text": text_ids},
        keys={"image": [f"k{i}" for i in range(num_pairs)], "speech": [f"k{i}" for i in speech_ids.tolist()],
              "text": [f"k{i}" for i in text_ids.tolist()]},
        pair_names=[f"p\t{i}" for i in range(num_pairs)],
        thumbnails=torch.rand(num_pairs - 1, 3, 32, 32, generator=gen),  # one image without a thumbnail
    )


def test_similarity_images_have_bright_diagonal():
    emb = toy_set()
    images = similarity_images(emb, max_pairs=4)
    assert set(images) == {"image_speech", "image_text", "speech_text"}
    img = images["image_text"]
    assert img.shape == (16, 16, 3)
    lum = img.astype(float).sum(-1)[::4, ::4]  # (4, 4), one value per cell
    assert (np.diag(lum)[:, None] >= lum).all()


def test_projector_entry_labels_every_point():
    emb = toy_set()
    mat, meta, imgs = projector_entry(emb)
    assert mat.shape == (5 + 3 + 12, 8) and imgs.shape == (20, 3, 32, 32) and len(meta) == 20
    assert [m[0] for m in meta] == ["image"] * 5 + ["speech"] * 3 + ["text"] * 12
    assert meta[0][1] == "p 0"  # tabs would break metadata.tsv
    assert torch.equal(imgs[:5], emb.thumbnails)


def test_table_and_flat_metrics():
    results = cross_modal_retrieval(toy_set().embeddings, toy_set().pair_ids)
    flat = flat_metrics(results)
    assert flat["image_to_text_R@1"] == results["image_to_text"]["R@1"]
    assert "text_to_speech_median_rank" in flat and len(flat) == 6 * 5
    table = format_table(results).splitlines()
    assert table[0].split()[:3] == ["direction", "queries", "cands"]
    assert len(table) == 2 + 6 and len({len(line) for line in table}) == 1  # aligned
    # The toy set's directions have 3-12 queries: under the default 20 every row carries the note.
    assert table[0].split()[-1] == "note" and all(r.endswith("too small to read (< 20 queries)") for r in table[2:])
    results = cross_modal_retrieval(toy_set().embeddings, toy_set().pair_ids, min_queries=4)
    small = {d for d, m in results.items() if m["too_small"]}
    assert small and small == {d for d, m in results.items() if m["num_queries"] < 4}
    table = format_table(results).splitlines()
    assert {r.split()[0] for r in table[2:] if r.rstrip().endswith("queries)")} == small
    assert len({len(line) for line in table}) == 1
    assert flat_metrics(results) == flat  # TensorBoard scalars are the same whatever the flag
    results = cross_modal_retrieval(toy_set().embeddings, toy_set().pair_ids, min_queries=1)
    assert "note" not in format_table(results).splitlines()[0]


def test_write_visuals_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    write_visuals(writer, toy_set(), step=3, prefix="val")
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"val/similarity/image_speech", "val/similarity/image_text",
                                         "val/similarity/speech_text"}
    assert acc.Images("val/similarity/image_text")[0].step == 3
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert "sprite" in config and "metadata.tsv" in config
    (sub,) = [p for p in tmp_path.glob("00003/*") if p.is_dir()]
    assert (sub / "metadata.tsv").read_text().splitlines()[0] == "modality\tpair\tkey"
    assert Image.open(sub / "sprite.png").size[0] >= 5 * 32
