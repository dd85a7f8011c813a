"""Decoding and element-making for one sample: shapes, coords, compositing, resampling, refusals."""

import io
import json
import random
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from helpers import png_header_only
from unimodal_free.config import config_from_dict
from unimodal_free.data.reading.elements import (
    DecodeError,
    decode_image,
    decode_speech,
    image_elements,
    sample_rows,
    speech_elements,
    text_elements,
)
from unimodal_free.data.reading.tokenizer import load_tokenizer

TOK = load_tokenizer("bytes")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def encode_image(arr_or_img, fmt="PNG", **kw) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def encode_audio(wave: np.ndarray, sr: int, fmt="FLAC") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


def data_cfg(**overrides):
    return config_from_dict({"data": {"tokenizer": "bytes", **overrides}}).data


# ---------------------------------------------------------------- image


def test_image_patches_shapes_coords_and_layout():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    e = image_elements(decode_image(encode_image(arr)), image_size=32, patch_size=8)
    assert e.modality == "image"
    assert e.values.shape == (16, 8 * 8 * 3) and e.values.dtype == torch.float32
    assert e.coords.shape == (16, 2)
    assert e.values.min() >= -1.0 and e.values.max() <= 1.0
    # Patch k = (row k // 4, col k % 4), flattened as (p, p, 3); lossless PNG, no resize at 32 px.
    expect = torch.from_numpy(arr[8:16, 16:24].astype(np.float32) / 127.5 - 1.0).reshape(-1)
    torch.testing.assert_close(e.values[1 * 4 + 2], expect)
    # Coords are patch centres (y, x) in [-1, 1].
    assert torch.allclose(e.coords[0], torch.tensor([-0.75, -0.75]))
    assert torch.allclose(e.coords[-1], torch.tensor([0.75, 0.75]))
    assert torch.allclose(e.coords[1], torch.tensor([-0.75, -0.25]))


def scaled_pixels(arr: np.ndarray) -> torch.Tensor:
    """The picture as image_elements scales it (lossless, no resize at its own size): (H, W, 3) in [-1, 1]."""
    return torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0)


@pytest.mark.parametrize("stride", [None, 8])
def test_stride_equal_to_patch_size_is_the_non_overlapping_cut(stride):
    arr = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    plain = image_elements(Image.fromarray(arr), image_size=32, patch_size=8)
    e = image_elements(Image.fromarray(arr), image_size=32, patch_size=8, stride=stride)
    assert torch.equal(e.values, plain.values) and torch.equal(e.coords, plain.coords)
    # ... and that cut is p x p blocks of the picture, row-major (so the comparison above is not vacuous).
    blocks = scaled_pixels(arr).reshape(4, 8, 4, 8, 3).permute(0, 2, 1, 3, 4).reshape(16, -1)  # (M, p*p*3)
    assert torch.equal(plain.values, blocks)


@pytest.mark.parametrize("size, patch, stride", [(32, 8, 4), (32, 8, 2), (64, 12, 4)])
def test_overlapping_patches_are_windows_centred_on_their_cells(size, patch, stride):
    """(size/stride)^2 elements at the cells' centres; each element's centre stride x stride square is its cell's
    pixels, the rest the window around it; beyond the picture's edge, mid-grey (0)."""
    arr = np.random.default_rng(3).integers(0, 256, (size, size, 3), dtype=np.uint8)
    e = image_elements(Image.fromarray(arr), image_size=size, patch_size=patch, stride=stride)
    g, margin = size // stride, (patch - stride) // 2
    assert e.values.shape == (g * g, patch * patch * 3) and e.coords.shape == (g * g, 2)
    centres = (torch.arange(g, dtype=torch.float32) + 0.5) * stride / size * 2 - 1  # cell centres in [-1, 1]
    want = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)  # (M, 2) as (y, x)
    torch.testing.assert_close(e.coords, want, rtol=0, atol=1e-6)
    x = scaled_pixels(arr)  # (H, W, 3)
    padded = torch.zeros(size + 2 * margin, size + 2 * margin, 3)  # the picture on a mid-grey border
    padded[margin:margin + size, margin:margin + size] = x
    windows = e.values.reshape(g, g, patch, patch, 3)  # (gh, gw, p, p, 3)
    for r in range(g):
        for c in range(g):
            y0, x0 = r * stride, c * stride
            cell = windows[r, c, margin:margin + stride, margin:margin + stride]
            assert torch.equal(cell, x[y0:y0 + stride, x0:x0 + stride]), (r, c)
            assert torch.equal(windows[r, c], padded[y0:y0 + patch, x0:x0 + patch]), (r, c)
    assert torch.all(windows[0, :, :margin] == 0) and torch.all(windows[:, 0, :, :margin] == 0)  # top, left edge
    assert torch.all(windows[-1, :, patch - margin:] == 0) and torch.all(windows[:, -1, :, patch - margin:] == 0)
    assert not torch.any(x == 0)  # no 8-bit level scales to 0: the zeros above are the margin's alone


def test_image_resize_shorter_side_and_centre_crop():
    # 40 x 80 (h x w): left quarter red, middle half green, right quarter blue -> crop keeps green only.
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, :20, 0] = 255
    arr[:, 20:60, 1] = 255
    arr[:, 60:, 2] = 255
    e = image_elements(decode_image(encode_image(arr)), image_size=16, patch_size=4)
    assert e.values.shape == (16, 48)
    px = e.values.reshape(-1, 3)  # (M*p*p, 3)
    assert torch.allclose(px.mean(0), torch.tensor([-1.0, 1.0, -1.0]), atol=0.02)


def test_rgba_transparent_pixels_become_white():
    arr = np.zeros((16, 16, 4), dtype=np.uint8)
    arr[:, :8] = (255, 0, 0, 0)  # fully transparent red -> white
    arr[:, 8:] = (0, 0, 0, 255)  # opaque black stays black
    e = image_elements(decode_image(encode_image(arr)), image_size=16, patch_size=8)
    img = e.values.reshape(2, 2, 8, 8, 3).permute(0, 2, 1, 3, 4).reshape(16, 16, 3)  # back to (H, W, 3)
    assert torch.all(img[:, :8] == 1.0)
    assert torch.all(img[:, 8:] == -1.0)


def test_palette_and_la_transparency_composited_on_white():
    p = Image.new("P", (16, 16), 0)
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.info["transparency"] = 0  # palette index 0 (red) is transparent
    e = image_elements(decode_image(encode_image(p)), 16, 8)
    assert torch.all(e.values == 1.0)
    la = Image.fromarray(np.dstack([np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)]), mode="LA")
    e = image_elements(decode_image(encode_image(la)), 16, 8)
    assert torch.all(e.values == 1.0)


@pytest.mark.parametrize("bad", [
    b"\x89PNG\r\n\x1a\nnot really",  # bad PNG
    b"\xff\xd8\xff\xe0" + b"\x00" * 20,  # broken JPEG
    b"",
])
def test_undecodable_image_raises_decode_error(bad):
    with pytest.raises(DecodeError, match="image"):
        decode_image(bad, "k1")


def test_truncated_jpeg_is_refused():
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode_image(arr, "JPEG", quality=90)
    with pytest.raises(DecodeError, match="k2: image"):
        decode_image(data[: len(data) // 2], "k2")


def test_decompression_bomb_header_refused_before_decoding():
    data = png_header_only(20000, 20000)
    assert struct.unpack(">II", data[16:24]) == (20000, 20000)  # the IHDR really claims it
    with pytest.raises(DecodeError, match="(?i)20000x20000|decompression bomb"):
        decode_image(data, "bomb")


# ---------------------------------------------------------------- speech


def sine(freq, sr, seconds, amp=0.3):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_resample_to_16k_keeps_frequency():
    wave = decode_speech(encode_audio(sine(440.0, 8000, 1.0), 8000), 16000)
    assert wave.shape == (16000,)
    spectrum = torch.fft.rfft(wave).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 Hz bins over 1 s
    ref = torch.from_numpy(sine(440.0, 16000, 1.0))
    err = (wave[200:-200] - ref[200:-200]).abs().max()  # away from the filter edges
    assert err < 0.01


def test_stereo_is_mixed_to_mono():
    left, right = sine(300.0, 16000, 0.5), sine(300.0, 16000, 0.5, amp=0.1)
    wave = decode_speech(encode_audio(np.stack([left, right], 1), 16000, "WAV"), 16000)
    torch.testing.assert_close(wave, torch.from_numpy((left + right) / 2), atol=1e-4, rtol=0)


def test_speech_elements_shapes_absolute_coords_and_cmvn():
    cfg = data_cfg(n_mels=40, frames_per_element=4, max_speech_seconds=6.0)
    one = speech_elements(torch.from_numpy(sine(500.0, 16000, 1.0)), 16000, 40, 4, 6.0)
    two = speech_elements(torch.from_numpy(sine(500.0, 16000, 2.0)), 16000, 40, 4, 6.0)
    frames = 1 + (16000 - 512) // 160  # 512-point FFT frames (25 ms window), 10 ms hop, no padding
    assert one.values.shape == (frames // 4, 4 * 40) and one.coords.shape == (frames // 4, 1)
    # Absolute time: the same element index has the same coord whatever the utterance length.
    torch.testing.assert_close(one.coords, two.coords[: one.num_elements])
    assert abs(float(one.coords[0]) - (0.02 / 6.0 * 2 - 1)) < 1e-6
    assert cfg.n_mels == 40


def test_speech_features_are_normalised_per_utterance():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    wave = 0.2 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.05 * rng.standard_normal(t.size)  # chirp + noise
    frames = 1 + (wave.size - 512) // 160
    e = speech_elements(torch.from_numpy(wave.astype(np.float32)), 16000, 40, 2, 6.0)
    feats = e.values.reshape(-1, 40)  # (frames, n_mels), frame-major layout
    assert feats.shape[0] == frames // 2 * 2
    assert feats.mean(0).abs().max() < 0.05  # only the dropped tail frame separates it from 0
    assert (feats.std(0, unbiased=False) - 1).abs().max() < 0.05
    # A pure tone has near-constant bins: the std floor keeps them near 0 instead of amplified noise.
    flat = speech_elements(torch.from_numpy(sine(500.0, 16000, 1.0)), 16000, 40, 4, 6.0)
    assert flat.values.abs().max() < 5


def test_speech_truncated_to_max_seconds_and_coords_in_range():
    e = speech_elements(torch.from_numpy(sine(500.0, 16000, 8.0)), 16000, 32, 4, 6.0)
    frames = 1 + (6 * 16000 - 512) // 160
    assert e.num_elements == frames // 4
    assert e.coords.min() >= -1.0 and e.coords.max() <= 1.0


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_bad_audio_raises_decode_error(fmt):
    data = encode_audio(sine(300.0, 16000, 0.5), 16000, fmt)
    garbage = data[:20] + bytes(range(256)) * 4
    with pytest.raises(DecodeError, match="speech"):
        decode_speech(garbage, 16000, "k")


def test_too_short_audio_raises():
    with pytest.raises(DecodeError, match="shorter than one analysis window"):
        speech_elements(torch.zeros(100), 16000, 32, 4, 6.0, "k")


# ---------------------------------------------------------------- text and samples


def test_text_ids_truncation_and_coords():
    e = text_elements("  héllo world  ", TOK, max_tokens=8)
    assert e.values.dtype == torch.long and e.values.tolist() == list("héllo wo".encode())[:8]
    assert e.coords.shape == (8, 1)
    short = text_elements("hi", TOK, max_tokens=8)
    torch.testing.assert_close(short.coords, e.coords[:2])  # absolute positions


def raw_sample(key="k", **files):
    sample = {"__key__": key}
    for ext, data in files.items():
        sample[ext] = data if isinstance(data, bytes) else json.dumps(data).encode() if ext == "json" else data.encode()
    return sample


def test_pair_rows_share_pair_id():
    cfg = data_cfg(image_size=16, patch_size=8, n_mels=16)
    s = raw_sample("k7", png=encode_image(np.zeros((16, 16, 3), np.uint8)), txt="a cat",
                   flac=encode_audio(sine(300, 16000, 0.5), 16000), json={"pair": "p7"})
    rows = sample_rows(s, cfg, TOK, train=True, rng=random.Random(0))
    assert [r[0].modality for r in rows] == ["image", "speech", "text"]
    assert {r[1] for r in rows} == {"k7"} and {r[2] for r in rows} == {"p7"}


def test_reader_cuts_overlapping_patches_at_the_configured_stride():
    arr = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    s = raw_sample("k8", png=encode_image(arr))
    (image, *_), = sample_rows(s, data_cfg(image_size=16, patch_size=8, patch_stride=4), TOK, train=False)
    want = image_elements(Image.fromarray(arr), image_size=16, patch_size=8, stride=4)
    assert image.values.shape == (16, 8 * 8 * 3)
    assert torch.equal(image.values, want.values) and torch.equal(image.coords, want.coords)


def test_multi_caption_train_picks_one_eval_keeps_all():
    cfg = data_cfg()
    s = raw_sample("c1", png=encode_image(np.zeros((16, 16, 3), np.uint8)), txt="first one\nsecond one\nthird one\n")
    picks = {TOK.decode(sample_rows(s, cfg, TOK, train=True, rng=random.Random(i))[1][0].values.tolist())
             for i in range(30)}
    assert picks == {"first one", "second one", "third one"}
    rows = sample_rows(s, cfg, TOK, train=False)
    assert [r[0].modality for r in rows] == ["image", "text", "text", "text"]
    assert len({r[2] for r in rows}) == 1 and rows[0][2] == "c1"
    # Same seed, same choice.
    a = sample_rows(s, cfg, TOK, train=True, rng=random.Random(5))[1][0].values
    b = sample_rows(s, cfg, TOK, train=True, rng=random.Random(5))[1][0].values
    assert torch.equal(a, b)


def test_json_captions_and_split_pairs_off():
    cfg = data_cfg(split_pairs=False)
    s = raw_sample("c2", png=encode_image(np.zeros((16, 16, 3), np.uint8)), json={"pair": "c2", "captions": ["x y", "z"]})
    assert len(sample_rows(s, cfg, TOK, train=False)) == 3
    rows = sample_rows(s, cfg, TOK, train=True, rng=random.Random(0))
    assert len(rows) == 1 and rows[0][2] is None


@pytest.mark.parametrize("files,match", [
    ({"txt": b""}, "text: text is empty"),
    ({"txt": b"caf\xe9 au lait"}, "not UTF-8"),
    ({"txt": "hi", "json": {"pair": "k", "modalities": ["image", "text"]}}, "no image file"),
    ({"json": {"pair": "k"}}, "no image/speech/text file"),
    ({"txt": "hi", "json": b"{not json"}, "json: invalid"),
    ({"txt": "hi", "json": {"modalities": 3}}, "modalities must be a list"),
    ({"txt": "hi", "json": {"captions": "one"}}, "captions must be a list"),
])
def test_bad_samples_raise_decode_error_naming_key(files, match):
    with pytest.raises(DecodeError, match=match) as info:
        sample_rows(raw_sample("badkey", **files), data_cfg(), TOK, train=True, rng=random.Random(0))
    assert info.value.key == "badkey"
