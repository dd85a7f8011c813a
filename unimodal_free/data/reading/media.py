"""Decode and validate the three media kinds, shared by the shard writer and the reader.

Validation means a real decode (PIL ``verify`` + ``load``, ``soundfile.read``,
strict UTF-8), because a header that parses says nothing about the bytes
behind it. Every failure raises :class:`BadMedia` with a short reason; the
caller adds the file or key name and decides whether to skip or stop.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import soundfile as sf
from PIL import Image

# An image whose header claims more than this is refused before decoding:
# a 20000x20000 "PNG" of a few bytes would otherwise allocate 1.6 GB.
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 40_000_000

# PIL format name -> shard extension. Other decodable formats are re-encoded to PNG.
IMAGE_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
IMAGE_EXTS = ("jpg", "png", "webp")
# libsndfile major format -> shard extension. Other decodable formats become FLAC.
SPEECH_FORMATS = {"FLAC": "flac", "WAV": "wav", "WAVEX": "wav", "OGG": "ogg"}
SPEECH_EXTS = ("flac", "wav", "ogg")


class BadMedia(ValueError):
    """The bytes are not a usable image / audio clip / text; the message says why."""


def _check_image_size(img: Image.Image) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise BadMedia(f"image has empty size {w}x{h}")
    if max(w, h) > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        raise BadMedia(
            f"image header claims {w}x{h} (limit {MAX_IMAGE_SIDE} px per side, {MAX_IMAGE_PIXELS} pixels)"
        )


def open_image(data: bytes) -> Image.Image:
    """Fully decoded image (any mode), size-checked from the header before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_image_size(img)
            img.verify()  # structural checks (chunk CRCs, truncation) verify can see
            img = Image.open(io.BytesIO(data))  # verify() leaves the image unusable
            img.load()
    except BadMedia:
        raise
    except Image.DecompressionBombError as e:  # PIL's own, far larger limit, checked inside open()
        raise BadMedia(f"image too large: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadMedia("not an image PIL can identify") from None
    except Exception as e:  # PIL raises many types: OSError, SyntaxError, ValueError, ...
        raise BadMedia(f"cannot decode image: {type(e).__name__}: {e}") from None
    return img


def image_extension(img: Image.Image) -> str | None:
    """Shard extension for the image's encoded format, None when it must be re-encoded."""
    return IMAGE_FORMATS.get(img.format or "")


def to_png_bytes(img: Image.Image) -> bytes:
    """Lossless re-encode for decodable formats that shards do not carry (BMP, GIF, TIFF, ...)."""
    if img.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any image; transparency is composited on white (what a viewer shows)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "F"):
        # 16-bit / float greyscale: scale to 8 bit by the format's range, not by clipping.
        arr = np.asarray(img, dtype=np.float32)
        scale = 1.0 if img.mode == "F" else (65535.0 if arr.max() > 255 else 255.0)
        arr = np.clip(arr / scale * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    return img.convert("RGB")


def decode_image_rgb(data: bytes) -> Image.Image:
    """Encoded image bytes -> validated RGB PIL image."""
    return to_rgb(open_image(data))


# Decoded-audio guards: a few hundred bytes of FLAC header can claim any of these.
MAX_SAMPLE_RATE = 384_000  # the highest rate real recorders use
MAX_CHANNELS = 32
# Extra input decoded past a cut so the resampler's sinc kernel (a few ms) sees real
# samples, not zero padding, up to the cut: the cut clip's features equal the whole clip's.
RESAMPLE_MARGIN_SECONDS = 0.05
# Frames per block when a whole file is only validated (the shard writer): bounds memory.
VALIDATE_BLOCK_FRAMES = 1 << 16


def _open_audio(data: bytes) -> sf.SoundFile:
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise BadMedia(f"cannot decode audio: {type(e).__name__}: {e}") from None
    if f.samplerate < 1000 or f.samplerate > MAX_SAMPLE_RATE:
        f.close()
        raise BadMedia(f"audio sample rate {f.samplerate} Hz is implausible")
    if not 1 <= f.channels <= MAX_CHANNELS:
        f.close()
        raise BadMedia(f"audio has {f.channels} channels (limit {MAX_CHANNELS})")
    return f


def to_mono(wav: np.ndarray) -> np.ndarray:
    """(T, channels) -> (T,) mono, refusing NaN/Inf."""
    mono = wav.mean(axis=1)  # (T,)
    if not np.isfinite(mono).all():
        raise BadMedia("audio contains NaN or Inf samples")
    return mono


def read_audio(data: bytes, max_seconds: float | None = None) -> tuple[np.ndarray, int, str]:
    """Encoded audio -> (mono float32 waveform (T,), sample rate, libsndfile format name).

    ``max_seconds``: decode only the first ``max_seconds`` (+ a resampling margin);
    a few hundred KB of FLAC silence can hold hours, gigabytes once decoded.
    """
    with _open_audio(data) as f:
        fmt, sr = f.format, f.samplerate
        frames = -1 if max_seconds is None else int((max_seconds + RESAMPLE_MARGIN_SECONDS) * sr)
        try:
            wav = f.read(frames=frames, dtype="float32", always_2d=True)  # (T, channels)
        except Exception as e:
            raise BadMedia(f"cannot decode audio: {type(e).__name__}: {e}") from None
    if wav.shape[0] == 0:
        raise BadMedia("audio has no samples")
    return to_mono(wav), sr, fmt


def check_audio(data: bytes) -> tuple[int, str]:
    """Decode a whole clip block by block (memory bounded whatever its length): (sample rate, format)."""
    with _open_audio(data) as f:
        fmt, sr, frames = f.format, f.samplerate, 0
        try:
            for block in f.blocks(VALIDATE_BLOCK_FRAMES, dtype="float32", always_2d=True):  # (t, channels)
                to_mono(block)
                frames += block.shape[0]
        except BadMedia:
            raise
        except Exception as e:
            raise BadMedia(f"cannot decode audio: {type(e).__name__}: {e}") from None
    if frames == 0:
        raise BadMedia("audio has no samples")
    return sr, fmt


def audio_to_flac(data: bytes) -> bytes:
    """Lossless 16-bit FLAC of decodable audio that shards do not carry (MP3, AIFF, ...), block by block."""
    out = io.BytesIO()
    with _open_audio(data) as f, sf.SoundFile(out, "w", f.samplerate, 1, format="FLAC", subtype="PCM_16") as w:
        for block in f.blocks(VALIDATE_BLOCK_FRAMES, dtype="float32", always_2d=True):  # (t, channels)
            w.write(np.clip(to_mono(block), -1.0, 1.0))
    return out.getvalue()


@functools.lru_cache(maxsize=16)
def _resampler(sr_in: int, sr_out: int):
    import torchaudio  # lazy: the shard writer never needs torch

    return torchaudio.transforms.Resample(sr_in, sr_out)  # builds the sinc kernel once per rate pair


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited (windowed sinc, torchaudio) resampling of a mono waveform (T,) -> (T',)."""
    if sr_in == sr_out:
        return wav.astype(np.float32, copy=False)
    import torch

    with torch.no_grad():
        return _resampler(sr_in, sr_out)(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))).numpy()


def decode_text(data: bytes) -> str:
    """Strict UTF-8 (a leading BOM is dropped), stripped; empty text is bad text."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadMedia(f"text is not UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r})") from None
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise BadMedia("text is empty")
    if "\x00" in text:
        raise BadMedia("text contains NUL bytes")
    return text
