"""The explorer's JSON API without HTTP: make a query (a caption, an uploaded picture or recording, a gallery
item), then read its ranking one page per modality. The server (server.py) only routes requests here.

A query is embedded once and kept under a random id (the newest QUERIES_KEPT), so paging never re-uploads.
Rankings are the search command's (``search.ranking.rank`` over the gallery cache's rows), so the page shows
exactly what ``python -m unimodal_free.search`` prints. An uploaded file is decoded by the shard reader's bounded
decoders (``Embedder.decode_media``); a gallery item's picture or recording is re-encoded from its decoded form
(``search.html``), never sent as the gallery's bytes; an item is named by its index, never by a path.
"""

from __future__ import annotations

import secrets
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import torch

from unimodal_free.data.reading.elements import DecodeError
from unimodal_free.embedder import Embedder
from unimodal_free.modalities import MODALITIES
from unimodal_free.search.cache import Cached
from unimodal_free.search.gallery import Gallery, item_bytes, sample_caption
from unimodal_free.search.html import audio_uri, image_uri
from unimodal_free.search.ranking import printable, rank
from unimodal_free.store.rebuild import EvalError

PAGE_SIZE = 10
UPLOAD_MAX_BYTES = 20 << 20  # a picture or recording sent from the page (and never above data.max_member_bytes)
TEXT_MAX_BYTES = 64 << 10  # a typed caption; data.max_caption_chars cuts it further
QUERIES_KEPT = 256
LABEL_CHARS = 200


class RequestError(Exception):
    """A request refused: its HTTP status and one line for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())


@dataclass(frozen=True)
class Query:
    modality: str
    label: str
    embedding: torch.Tensor  # (D,), L2-normalised
    item: Optional[int] = None  # the gallery item it is, for a click on a result


class Explorer:
    """One model and one embedded gallery, shared by the server's threads (the model runs under a lock)."""

    def __init__(self, embedder: Embedder, gallery: Gallery, cached: Cached, status: str, card: dict[str, Any]):
        self.embedder, self.gallery, self.status, self.card = embedder, gallery, status, card
        self.items, self.embeddings = cached.items, cached.embeddings  # (N, D)
        self.item_modalities = [item.modality for item in self.items]
        self.present = [m for m in MODALITIES if m in self.item_modalities]
        self.captions = sample_caption(self.items)
        self.upload_max = min(UPLOAD_MAX_BYTES, embedder.cfg.data.max_member_bytes)
        self._model_lock = threading.Lock()
        self._queries: OrderedDict[str, Query] = OrderedDict()
        self._queries_lock = threading.Lock()

    # ------------------------------------------------------------ what the page shows first
    def info(self) -> dict[str, Any]:
        counts = {m: self.item_modalities.count(m) for m in self.present}
        return {"card": self.card, "gallery": {"items": len(self.items), "counts": counts, "status": self.status},
                "query_modalities": self.embedder.modalities, "page_size": PAGE_SIZE, "upload_max_bytes": self.upload_max,
                "max_speech_seconds": self.embedder.cfg.data.max_speech_seconds}

    # ------------------------------------------------------------ queries
    def _keep(self, query: Query) -> dict[str, Any]:
        qid = secrets.token_hex(16)
        with self._queries_lock:
            self._queries[qid] = query
            while len(self._queries) > QUERIES_KEPT:
                self._queries.popitem(last=False)
        return {"query": qid, "modality": query.modality, "label": query.label, "item": query.item,
                "results": self.present}

    def _embed(self, x: Any, modality: str) -> tuple[torch.Tensor, list[str]]:
        """(The query's embedding (D,), the warnings embedding gave: an unfamiliar caption's, shown on the page)."""
        if modality not in self.embedder.modalities:
            raise RequestError(400, f"{modality} query: this model was trained without {modality} "
                                    f"(it has {', '.join(self.embedder.modalities)})")
        with self._model_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                z = self.embedder.embed([x])[0]  # (D,)
            except EvalError as exc:
                raise RequestError(400, f"{modality} query: {exc}") from None
        return z, [" ".join(str(w.message).split()) for w in caught]

    def query_text(self, body: bytes) -> dict[str, Any]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "text query: not UTF-8") from None
        if not text.split():
            raise RequestError(400, "text query: empty caption")
        z, notes = self._embed(text, "text")
        return {**self._keep(Query("text", printable(" ".join(text.split()), LABEL_CHARS), z)), "notes": notes}

    def query_upload(self, modality: str, body: bytes) -> dict[str, Any]:
        """A picture or recording sent as the request body (already within ``upload_max``)."""
        d = self.embedder.cfg.data
        try:
            x = self.embedder.decode_media(body, modality, f"uploaded {modality}")
        except DecodeError as exc:
            raise RequestError(400, f"uploaded {modality}: {exc.reason}") from None
        if modality == "image":
            label = f"uploaded picture, {x.size[0]}x{x.size[1]}"
        else:
            wave, sr = x
            used = min(len(wave) / sr, d.max_speech_seconds)
            label = f"uploaded recording, {used:.1f} s used (data.max_speech_seconds = {d.max_speech_seconds:g})"
        z, notes = self._embed(x, modality)
        return {**self._keep(Query(modality, label, z)), "notes": notes}

    def query_item(self, index: int) -> dict[str, Any]:
        """A gallery item as the query, by its cached embedding (no file is read)."""
        if not 0 <= index < len(self.items):
            raise RequestError(404, f"item {index}: no such gallery item (0..{len(self.items) - 1})")
        item = self.items[index]
        caption = self.captions[index] if item.modality != "text" else ""
        label = printable(f"gallery item {item.key}" + (f": {caption}" if caption else "")
                          + (f" ({item.caption})" if item.modality == "text" else ""), LABEL_CHARS)
        return {**self._keep(Query(item.modality, label, self.embeddings[index], index)), "notes": []}

    # ------------------------------------------------------------ results
    def results(self, qid: str, modality: str, page: int) -> dict[str, Any]:
        """One page of the query's ranking among the gallery's ``modality`` items, with each hit's media."""
        with self._queries_lock:
            query = self._queries.get(qid)
        if query is None:
            raise RequestError(404, f"query {qid}: unknown or expired (make the query again)")
        if modality not in self.present:
            raise RequestError(404, f"modality {modality}: the gallery has none (it has {', '.join(self.present)})")
        total = self.item_modalities.count(modality)
        pages = max(1, -(-total // PAGE_SIZE))
        if not 0 <= page < pages:
            raise RequestError(404, f"page {page}: out of range (0..{pages - 1})")
        hits = rank(query.embedding, self.embeddings, self.item_modalities, [modality], (page + 1) * PAGE_SIZE)
        hits = hits[modality][page * PAGE_SIZE:]
        shown = [self.items[h.index] for h in hits]
        media = item_bytes(self.gallery, shown, self.embedder.cfg.data) if modality in ("image", "speech") else {}
        out = []
        for h, item in zip(hits, shown):
            out.append({"id": h.index, "rank": h.rank, "score": round(h.score, 4), "key": printable(item.key, LABEL_CHARS),
                        "modality": item.modality, "caption": printable(self.captions[h.index], 1000),
                        "file": printable(item.file, LABEL_CHARS), **self._media(item.modality, media.get(item), item.file)})
        return {"query": qid, "modality": modality, "page": page, "pages": pages, "total": total, "hits": out}

    def _media(self, modality: str, data: bytes | str | None, label: str) -> dict[str, str]:
        """{"media": a data: URI of the re-encoded picture/recording} or {"note": why there is none}."""
        if data is None:
            return {}
        if isinstance(data, str):
            return {"note": data}
        try:
            if modality == "image":
                return {"media": image_uri(data, label)}
            return {"media": audio_uri(data, label, self.embedder.cfg.data.max_speech_seconds)}
        except DecodeError as exc:
            return {"note": exc.reason}
