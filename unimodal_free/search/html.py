"""The contact sheet of a search: one self-contained HTML file (pictures and recordings inline as data: URIs).

Pictures are re-encoded as small PNG thumbnails and recordings as 16-bit WAV of what the model heard
(the first ``data.max_speech_seconds``, mono), both decoded by the shard decoder's bounded functions, so
the page carries no byte of a gallery file as it was. Every key, caption, file name and query text is
escaped: they come from the gallery and are hostile.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Optional

import soundfile as sf

from unimodal_free.data.reading.elements import DecodeError, decode_image, read_speech
from unimodal_free.search.gallery import GalleryItem
from unimodal_free.search.ranking import Hit

THUMB_PX = 160

STYLE = """body{font-family:sans-serif;margin:1em}h2{margin-top:1.5em}
.hits{display:flex;flex-wrap:wrap;gap:12px}.hit{width:200px;border:1px solid #ccc;padding:6px;font-size:13px}
.hit img{max-width:160px;display:block}.hit audio{width:190px}.score{font-weight:bold}
.file,.key{color:#555;word-break:break-all}.query{border:2px solid #369;padding:8px;display:inline-block}"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def image_uri(data: bytes, label: str) -> str:
    """A PNG thumbnail (at most THUMB_PX a side) as a data: URI."""
    im = decode_image(data, label)
    im.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def audio_uri(data: bytes, label: str, max_seconds: float) -> str:
    """What the model hears of a recording (mono, first ``max_seconds``) as a 16-bit WAV data: URI."""
    wave, sr = read_speech(data, label, max_seconds)
    buf = io.BytesIO()
    sf.write(buf, wave[: int(max_seconds * sr)], sr, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def media_html(modality: str, data: Optional[bytes | str], label: str, max_seconds: float) -> str:
    """An <img> or <audio controls> element for a picture or recording, or a note why there is none."""
    if modality not in ("image", "speech") or data is None:
        return ""
    if isinstance(data, str):
        return f'<div class="note">({_e(data)})</div>'
    try:
        if modality == "image":
            return f'<img src="{image_uri(data, label)}" alt="{_e(label)}">'
        return f'<audio controls src="{audio_uri(data, label, max_seconds)}"></audio>'
    except DecodeError as exc:
        return f'<div class="note">({_e(exc.reason)})</div>'


def query_html(modality: str, value: str, data: Optional[bytes | str], max_seconds: float) -> str:
    """The query: its caption, or its file name with the picture or player."""
    return f"<b>query ({_e(modality)})</b>: {_e(value)}{media_html(modality, data, value, max_seconds)}"


def contact_sheet(title: str, query_html: str, sections: dict[str, list[Hit]], items: list[GalleryItem],
                  captions: list[str], media: dict[GalleryItem, bytes | str], max_seconds: float) -> str:
    """The whole page: the query, then per modality its hits with rank, score, picture/player, caption, key, file."""
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{_e(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{_e(title)}</h1>", f'<div class="query">{query_html}</div>']
    for modality, hits in sections.items():
        parts.append(f"<h2>{_e(modality)}</h2>")
        parts.append('<div class="hits">')
        for h in hits:
            item = items[h.index]
            parts.append(
                f'<div class="hit"><div><span class="rank">#{h.rank}</span> <span class="score">{h.score:.4f}</span></div>'
                f"{media_html(item.modality, media.get(item), item.file, max_seconds)}"
                f'<div class="caption">{_e(captions[h.index])}</div><div class="key">{_e(item.key)}</div>'
                f'<div class="file">{_e(item.file)}</div></div>')
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
