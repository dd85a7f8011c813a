"""What the explorer page says about the model: the model card's "What it was trained on", its retrieval table,
the tokenizer's frequent words and the step, read from the model folder the embedder was loaded from.

The card and config.json are files from outside: read within a cap (``bounded_read``), every value checked for
its type and cut to a length, and handed to the page as plain strings that it shows as text, never as HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from unimodal_free.bounded_read import BoundedReadError, read_bounded
from unimodal_free.embedder import Embedder
from unimodal_free.search.ranking import printable
from unimodal_free.store.model_folder import CARD_NAME, is_model_folder, read_folder_config

CARD_MAX_BYTES = 1 << 20  # a card is a few KB; a larger README.md is not ours, and is refused unread
MAX_LINES = 40  # per section shown
MAX_LINE_CHARS = 1000  # the card's own lines are a few hundred characters
MAX_WORDS = 100
MAX_WORD_CHARS = 40


def _model_folder(embedder: Embedder) -> Optional[Path]:
    """The model folder the weights came from, or None (a checkpoint, a bare model.safetensors)."""
    source = Path(embedder.source)
    for folder in (source, source.parent):
        try:
            if folder.is_dir() and is_model_folder(folder):
                return folder
        except (OSError, ValueError):  # a config.json over its cap, or not JSON: not a model folder we can describe
            return None
    return None


def _clean(line: str) -> str:
    """A Markdown line as plain text: emphasis and code marks dropped, control characters shown as '?', cut."""
    return printable(line.replace("**", "").replace("`", ""), MAX_LINE_CHARS)


def section(card: str, title: str) -> list[str]:
    """The lines under ``## title`` up to the next ``## `` heading (at most MAX_LINES), blank ones dropped."""
    lines, inside = [], False
    for line in card.splitlines():
        if line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip() == title
        elif inside and line.strip():
            lines.append(line)
    return lines[:MAX_LINES]


def retrieval(card: str) -> tuple[str, str]:
    """(The sentence before the retrieval table, the table) of the card's Retrieval section; ("", "") when none."""
    lines = section(card, "Retrieval")
    if "```" not in lines:
        return (_clean(lines[0]) if lines else ""), ""
    start = lines.index("```")
    end = lines.index("```", start + 1) if "```" in lines[start + 1:] else len(lines)
    note = " ".join(_clean(x) for x in lines[:start])
    table = "\n".join(printable(x, MAX_LINE_CHARS) for x in lines[start + 1:end])
    return note, table


def _words(config: Any) -> list[str]:
    tok = config.get("tokenizer") if isinstance(config, dict) else None
    words = tok.get("words") if isinstance(tok, dict) else None
    if not isinstance(words, list):
        return []
    return [_clean(w)[:MAX_WORD_CHARS] for w in words[:MAX_WORDS] if isinstance(w, str)]


def card_summary(embedder: Embedder) -> dict[str, Any]:
    """The page's model panel: source, step, teacher/student, and from a model folder its card's sections."""
    out: dict[str, Any] = {"source": _clean(str(embedder.source)), "step": embedder.step, "which": embedder.which,
                           "modalities": embedder.modalities, "embedding_dim": embedder.embedding_dim,
                           "card": "", "trained_on": [], "words": [], "retrieval_note": "", "retrieval_table": ""}
    folder = _model_folder(embedder)
    if folder is None:
        out["card"] = "no model card: the model was not loaded from a model folder"
        return out
    try:
        card = read_bounded(folder / CARD_NAME, CARD_MAX_BYTES, "a model card").decode("utf-8", errors="replace")
    except (BoundedReadError, OSError) as exc:
        out["card"] = _clean(f"no model card: {exc}")
        card = ""
    out["trained_on"] = [_clean(x.lstrip("- ")) for x in section(card, "What it was trained on")]
    out["retrieval_note"], out["retrieval_table"] = retrieval(card)
    try:
        out["words"] = _words(read_folder_config(folder))
    except (BoundedReadError, OSError, ValueError):
        pass
    return out
