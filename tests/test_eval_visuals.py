"""Eval pictures: thumbnails rebuilt from patch and log-mel elements, similarity figures, projector entry,
TensorBoard read-back."""

import numpy as np
import pytest
import torch
from PIL import Image

from unimodal_free.config import config_from_dict
from unimodal_free.data.reading.elements import image_elements, speech_elements
from unimodal_free.eval.embed import EmbeddingSet
from unimodal_free.eval.figures import similarity_figure
from unimodal_free.eval.report import clip_benchmark_result, flat_metrics, format_table, results_json
from unimodal_free.eval.retrieval import cross_modal_retrieval
from unimodal_free.eval.thumbnails import element_thumbnail, spectrogram_thumbnail, unpatchify_thumbnail
from unimodal_free.eval.visuals import METADATA_HEADER, projector_entry, similarity_matrices, write_visuals


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


@pytest.mark.parametrize("size, patch, stride", [(32, 8, 4), (32, 8, 2), (64, 12, 4)])
def test_thumbnail_of_overlapping_patches_is_the_non_overlapping_ones(size, patch, stride):
    """Each overlapping element gives its own cell (its centre stride x stride square): the same picture, bit
    for bit, as the plain cut of it, whatever the row order."""
    pixels = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    plain = image_elements(Image.fromarray(pixels), image_size=size, patch_size=stride)  # cells as patches
    e = image_elements(Image.fromarray(pixels), image_size=size, patch_size=patch, stride=stride)
    perm = torch.randperm(e.values.shape[0], generator=torch.Generator().manual_seed(0))
    want = unpatchify_thumbnail(plain.values, plain.coords, patch_size=stride, size=size)  # (3, size, size)
    assert torch.allclose(want, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0, atol=1e-5)
    for order in (torch.arange(len(perm)), perm):
        thumb = unpatchify_thumbnail(e.values[order], e.coords[order], patch_size=patch, size=size, stride=stride)
        assert torch.equal(thumb, want)
    if size % patch == 0:  # the plain cut at the same patch size, where there is one
        same = image_elements(Image.fromarray(pixels), image_size=size, patch_size=patch)
        assert torch.equal(unpatchify_thumbnail(same.values, same.coords, patch_size=patch, size=size), want)
    small = unpatchify_thumbnail(e.values[perm], e.coords[perm], patch_size=patch, stride=stride)
    assert torch.equal(small, unpatchify_thumbnail(plain.values, plain.coords, patch_size=stride))
    # The eval's route (embed_batches): the stride comes from the data config.
    cfg = config_from_dict({"data": {"image_size": size, "patch_size": patch, "patch_stride": stride}}).data
    assert torch.equal(element_thumbnail("image", e.values[perm], e.coords[perm], cfg), small)


def test_thumbnail_refuses_wrong_patch_size():
    e = image_elements(Image.new("RGB", (16, 16)), image_size=16, patch_size=8)
    with pytest.raises(ValueError, match="patch_size=4"):
        unpatchify_thumbnail(e.values, e.coords, patch_size=4)


def test_spectrogram_thumbnail_puts_a_tone_at_its_frequency():
    """Noise, then a tone from 0.5 s on: in the thumbnail's right half (the tone) the brightest row is near
    the bottom for a low tone and near the top for a high one. (Per-band normalisation over the utterance,
    as the model sees it, leaves only changes over time: a tone held from the start would be flat.)"""
    rows = []
    for freq in (300.0, 5000.0):
        t = torch.arange(16000) / 16000
        wave = 0.01 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
        wave[8000:] += torch.sin(2 * torch.pi * freq * t[8000:])
        e = speech_elements(wave, 16000, n_mels=40, frames_per_element=4, max_seconds=2.0)
        thumb = spectrogram_thumbnail(e.values, n_mels=40, size=32)  # (3, 32, 32)
        assert thumb.shape == (3, 32, 32) and 0.0 <= float(thumb.min()) and float(thumb.max()) <= 1.0
        rows.append(int(thumb.sum(0)[:, 20:].mean(1).argmax()))  # brightest row of the tone (magma: bright = high)
    assert rows[0] > 20 and rows[1] < 12, rows
    with pytest.raises(ValueError, match="n_mels=40"):
        spectrogram_thumbnail(torch.zeros(3, 90), n_mels=40)


def figure_pixels(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def test_similarity_figure_fixed_scale_axes_title():
    sims = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.9, -0.5], [0.0, 0.0, 0.2]])
    fig = similarity_figure(sims, "image", "text", step=40)
    ax, cbar = fig.axes
    assert ax.get_title().startswith("image \u2192 text, step 40")
    assert "same pair +0.70" in ax.get_title()  # (1.0 + 0.9 + 0.2) / 3
    assert ax.get_ylabel() == "query: image (pair index)" and ax.get_xlabel() == "candidate: text (pair index)"
    (image,) = ax.get_images()
    assert image.get_clim() == (-1.0, 1.0)  # fixed, not the matrix's own range
    assert cbar.get_ylabel() == "cosine similarity" and cbar.get_ylim() == (-1.0, 1.0)
    # The same value is the same colour in two figures whose ranges differ (min-max scaling would differ).
    other = similarity_figure(torch.tensor([[0.5, 0.4], [0.3, 0.5]]), "image", "text", step=41)
    assert np.allclose(image.to_rgba(0.5), other.axes[0].get_images()[0].to_rgba(0.5))
    assert figure_pixels(fig).shape == (480, 560, 3)
    with pytest.raises(ValueError, match="P >= 2"):
        similarity_figure(torch.ones(1, 1), "image", "text", 0)


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
        # One image and one recording without a thumbnail.
        thumbnails={"image": torch.rand(num_pairs - 1, 3, 32, 32, generator=gen),
                    "speech": torch.rand(len(speech_ids) - 1, 3, 32, 32, generator=gen)},
        captions=[f"caption {i}.{c}\twith a tab\nand a newline" for i in range(num_pairs) for c in range(captions)],
    )


def test_similarity_matrices_have_the_pairs_on_the_diagonal():
    emb = toy_set()
    matrices = similarity_matrices(emb, max_pairs=4)
    assert set(matrices) == {("image", "speech"), ("image", "text"), ("speech", "text")}
    sims = matrices[("image", "text")]
    assert sims.shape == (4, 4)
    assert (sims.diagonal()[:, None] >= sims).all()
    assert matrices[("image", "speech")].shape == (3, 3)  # speech has pairs 0, 2, 4 only


def test_projector_entry_labels_every_point():
    emb = toy_set()
    mat, meta, imgs = projector_entry(emb)
    assert mat.shape == (5 + 2 + 12, 8) and imgs.shape == (19, 3, 32, 32) and len(meta) == 19
    assert METADATA_HEADER == ["modality", "pair", "caption", "key"]
    assert [m[0] for m in meta] == ["image"] * 5 + ["speech"] * 2 + ["text"] * 12
    assert meta[0][1] == "p 0"  # tabs would break metadata.tsv
    # Every point carries its pair's caption (a text point its own), tabs and newlines flattened.
    assert meta[0][2] == "caption 0.0 with a tab and a newline"  # image of pair 0: its first caption
    assert meta[5][2] == "caption 0.0 with a tab and a newline" and meta[6][2].startswith("caption 2.0 ")  # speech
    assert [m[2].split()[1] for m in meta[7:]] == [f"{i}.{c}" for i in range(6) for c in range(2)]  # text: own
    assert all("\t" not in cell and "\n" not in cell for row in meta for cell in row)
    assert torch.equal(imgs[:5], emb.thumbnails["image"]) and torch.equal(imgs[5:7], emb.thumbnails["speech"])
    assert torch.equal(imgs[7:], torch.tensor([0.20, 0.45, 0.85])[None, :, None, None].expand(12, 3, 32, 32))


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


def test_eval_json_flat_keys_and_clip_benchmark_result():
    results = cross_modal_retrieval(toy_set().embeddings, toy_set().pair_ids, min_queries=4)
    out = results_json(results, {"step": 3})
    assert out["metadata"] == {"step": 3}
    assert out["image_to_text_R@1"] == results["image_to_text"]["R@1"] and 0.0 <= out["image_to_text_R@1"] <= 1.0
    assert out["speech_to_image_median_rank"] == results["speech_to_image"]["median_rank"]
    assert out["image_to_speech_too_small"] is True and out["image_to_speech_num_queries"] == 3
    assert len(out) == 1 + 6 * 11 and not any(k.endswith("min_queries") for k in out)
    cb = clip_benchmark_result(results, "heldout", "unimodal_free-teacher", "model.safetensors", "en")
    assert list(cb) == ["dataset", "model", "pretrained", "task", "metrics", "language"]
    assert cb["metrics"]["image_retrieval_recall@5"] == results["text_to_image"]["R@5"]
    assert cb["metrics"]["text_retrieval_recall@10"] == results["image_to_text"]["R@10"]
    assert len(cb["metrics"]) == 6  # speech directions stay in the eval JSON
    emb = toy_set()
    speech_text = cross_modal_retrieval({m: emb.embeddings[m] for m in ("speech", "text")},
                                        {m: emb.pair_ids[m] for m in ("speech", "text")})
    with pytest.raises(ValueError, match="image <-> text recall only"):
        clip_benchmark_result(speech_text, "d", "m", "p", "en")


def test_write_visuals_reads_back(tmp_path):
    """Real event files: one rendered figure per modality pair at the step, its size, and the projector's
    metadata with the captions; pyplot's figure registry stays empty."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    write_visuals(writer, toy_set(), step=3, prefix="val")
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"val/similarity/image_speech", "val/similarity/image_text",
                                         "val/similarity/speech_text"}
    (event,) = acc.Images("val/similarity/image_text")
    assert event.step == 3 and (event.width, event.height) == (560, 480)  # the figure, not a 4-pixel-per-cell bitmap
    import io

    picture = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert picture.shape == (480, 560, 3) and len(np.unique(picture.reshape(-1, 3), axis=0)) > 50  # axes, text, colours
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert "sprite" in config and "metadata.tsv" in config
    (sub,) = [p for p in tmp_path.glob("00003/*") if p.is_dir()]
    tsv = (sub / "metadata.tsv").read_text().splitlines()
    assert tsv[0] == "modality\tpair\tcaption\tkey" and len(tsv) == 1 + 19
    assert all(len(row.split("\t")) == 4 for row in tsv)
    assert tsv[1].split("\t")[2] == "caption 0.0 with a tab and a newline"
    assert Image.open(sub / "sprite.png").size[0] >= 5 * 32
