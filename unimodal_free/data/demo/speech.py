"""The demo's spoken captions: espeak-ng with a varied voice, speed and pitch, 16 kHz mono
FLAC (some OGG Vorbis and WAV), byte-reproducible. Other corpora speak their captions with the
same helpers: anything with a caption, voice, speed and pitch (:class:`Spoken`) can be spoken."""

from __future__ import annotations

import io
import subprocess
import zlib
from typing import Protocol
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import soundfile as sf

from unimodal_free.data.demo.scenes import DemoDataError, Scene
from unimodal_free.data.reading.media import resample

SAMPLE_RATE = 16000


class Spoken(Protocol):
    """What speech synthesis reads of a demo scene, or of any other caption to speak."""

    caption: str
    voice: str  # an espeak-ng voice, e.g. "en+f3"
    speed: int  # words per minute
    pitch: int  # 0-99

# The fixed Ogg stream serial number. libsndfile draws a random one per file,
# the only non-deterministic bytes in an Ogg Vorbis file it writes.
_OGG_SERIAL = 0x55464431
_BITREV = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (poly 0x04c11db7, MSB-first, init 0, no final xor) via zlib's LSB-first CRC-32."""
    reg = zlib.crc32(page.translate(_BITREV), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reg:032b}"[::-1], 2)


def fix_ogg_serial(data: bytes, serial: int = _OGG_SERIAL) -> bytes:
    """Rewrite every page's stream serial number (and its CRC) so an Ogg file is reproducible."""
    out, pos = bytearray(data), 0
    while pos < len(out):
        if out[pos:pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        nseg = out[pos + 26]
        length = 27 + nseg + sum(out[pos + 27:pos + 27 + nseg])
        out[pos + 14:pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22:pos + 26] = b"\0\0\0\0"
        out[pos + 22:pos + 26] = _ogg_crc(bytes(out[pos:pos + length])).to_bytes(4, "little")
        pos += length
    return bytes(out)


SPEECH_BATCH = 16  # captions per espeak-ng call: its start-up costs ~3x synthesising one caption
_BREAK_S = 1.0  # SSML pause between batched captions
_MIN_GAP_S = 0.6  # a silent run this long separates captions (inner pauses are < 0.5 s)
_SILENT = 4  # a 10 ms frame with no |int16 sample| above this is silence (variant voices dither by +-1)
_MARGIN_S = 0.1  # silence kept around each trimmed caption


def _espeak(scene: Spoken, text: str, ssml: bool = False) -> tuple[np.ndarray, int]:
    """Run espeak-ng with the scene's voice -> (int16 waveform (T,), sample rate)."""
    cmd = ["espeak-ng", "--stdout", "-v", scene.voice, "-s", str(scene.speed), "-p", str(scene.pitch)]
    try:
        proc = subprocess.run(cmd + (["-m"] if ssml else []) + [text], capture_output=True, check=True)
    except FileNotFoundError:
        raise DemoDataError(
            "espeak-ng not found: it speaks the demo's captions; install it (apt-get install espeak-ng), "
            "or train on your own shards (data.train, data.heldout)"
        ) from None
    except subprocess.CalledProcessError as e:
        raise DemoDataError(f"espeak-ng failed for voice {scene.voice}: {e.stderr.decode(errors='replace').strip()}") from None
    wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="int16")
    return wav, sr


def _silent_runs(wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Silent-frame runs as (start frame, end frame) arrays, and the frame length in samples."""
    hop = sr // 100
    n = len(wav) // hop
    loud = np.abs(wav[: n * hop].astype(np.int32)).reshape(n, hop).max(axis=1) > _SILENT  # (frames,)
    edges = np.diff(np.concatenate([[0], (~loud).astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), hop


def _trim(wav: np.ndarray, sr: int) -> np.ndarray:
    """Drop leading/trailing silence beyond a small margin."""
    starts, ends, hop = _silent_runs(wav, sr)
    first, last = 0, len(wav)
    if len(starts) and starts[0] == 0:
        first = ends[0] * hop
    if len(ends) and ends[-1] * hop >= len(wav) - hop:
        last = starts[-1] * hop
    margin = int(_MARGIN_S * sr)
    return wav[max(0, first - margin): min(len(wav), last + margin)]


def _split(wav: np.ndarray, sr: int, count: int) -> list[np.ndarray] | None:
    """Cut a batched synthesis at its long pauses; None unless exactly ``count`` pieces come out."""
    starts, ends, hop = _silent_runs(wav, sr)
    n_frames = len(wav) // hop
    long = (ends - starts) * hop >= _MIN_GAP_S * sr
    inner = long & (starts > 0) & (ends < n_frames)
    cuts = ((starts[inner] + ends[inner]) // 2 * hop).tolist()
    if len(cuts) != count - 1:
        return None
    bounds = [0] + cuts + [len(wav)]
    return [_trim(wav[lo:hi], sr) for lo, hi in zip(bounds[:-1], bounds[1:])]


def synth_batch(scenes: list[Spoken]) -> list[tuple[np.ndarray, int]]:
    """Captions of scenes sharing one voice/speed/pitch -> [(trimmed int16 waveform, espeak rate)].

    One espeak-ng call speaks them all, separated by SSML pauses, and is cut at the pauses;
    if the cut does not give one piece per caption, each caption is spoken on its own.
    """
    if len(scenes) > 1:
        ssml = "<speak>" + f'<break time="{int(_BREAK_S * 1000)}ms"/>'.join(
            xml_escape(s.caption) for s in scenes) + "</speak>"
        wav, sr = _espeak(scenes[0], ssml, ssml=True)
        pieces = _split(wav, sr, len(scenes))
        if pieces is not None:
            return [(p, sr) for p in pieces]
    out = []
    for s in scenes:
        wav, sr = _espeak(s, s.caption)
        out.append((_trim(wav, sr), sr))
    return out


def encode_speech(wav: np.ndarray, sr: int, fmt: str) -> bytes:
    """int16 waveform -> 16 kHz mono encoded as fmt ("flac" | "ogg" | "wav")."""
    x = resample(wav.astype(np.float32) / 32768.0, sr, SAMPLE_RATE)
    buf = io.BytesIO()
    if fmt == "ogg":
        sf.write(buf, x, SAMPLE_RATE, format="OGG", subtype="VORBIS")
        return fix_ogg_serial(buf.getvalue())
    sf.write(buf, np.clip(x, -1, 1), SAMPLE_RATE, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def _speech_job(scenes: list[Scene]) -> list[bytes]:
    return [encode_speech(wav, sr, s.audio_format) for s, (wav, sr) in zip(scenes, synth_batch(scenes))]


def speech_batches(scenes: list[Spoken], size: int = SPEECH_BATCH) -> list[list[int]]:
    """Scene indices grouped by voice/speed/pitch, in plan order, at most ``size`` per group."""
    groups: dict = {}
    for i, s in enumerate(scenes):
        groups.setdefault((s.voice, s.speed, s.pitch), []).append(i)
    batches = [g[k:k + size] for g in groups.values() for k in range(0, len(g), size)]
    return sorted(batches, key=lambda b: b[0])

