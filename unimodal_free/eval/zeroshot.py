"""Zero-shot classification: class names become text embeddings, images and recordings take the nearest one.

CLIP_benchmark's protocol: each class name is put into every prompt template (``{c}`` marks where),
the prompts are embedded (tokenised with the model's tokenizer, through the same pooled path as the
rows being classified), L2-normalised, averaged over the templates and re-normalised; a row's class
scores are its cosine similarity to each class embedding. Text rows are not classified (their labels
are words of their own caption).

Class names and templates come from a JSON file, ``{"field": "shape", "classnames": [...],
"templates": ["a {c}", "a picture of a {c}"]}`` (or a list of such objects; ``classnames`` may also map
each label value to the word its prompts use, ``{"7": "seven", ...}``), or, for the demo's label
fields (shape, colour, size, position), from :func:`demo_class_specs`: the demo caption grammar with the
field's slot as ``{c}``, the other attributes left out, and, for a field that is not the shape, every
shape in the noun's place (so "a {c} circle", "a {c} square", ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unimodal_free.bounded_read import BoundedReadError, read_bounded
from unimodal_free.data.demo.scenes import COLOURS, POSITIONS, SHAPES, SIZES, TEMPLATES
from unimodal_free.eval.classification import label_metrics, most_frequent
from unimodal_free.eval.embed import EmbeddingSet
from unimodal_free.eval.probe import as_array, label_rows

SLOT = "{c}"
EmbedTexts = Callable[[list[str]], Any]  # prompts -> (n, D) embeddings, in order
MAX_CLASS_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class ClassSpec:
    """One label field's class names and the prompt templates that turn each into text."""

    field: str
    classnames: tuple[str, ...]  # the label values, as the shards' json has them
    templates: tuple[str, ...]
    words: tuple[str, ...] = ()  # what each class is called in a prompt ("7" -> "seven"); () = its label value

    def prompts(self, classname: str) -> list[str]:
        word = self.words[self.classnames.index(classname)] if self.words else classname
        # str.replace, not str.format: a template from a handed file is text, never a format program.
        return [t.replace(SLOT, word) for t in self.templates]


# The demo's label fields as its shards' json names them, with their values in grammar order.
DEMO_CLASSES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "position": tuple(POSITIONS)}
DEMO_SLOTS = {"shape": "shape", "colour": "colour", "size": "size", "position": "where"}


def demo_templates(field: str) -> tuple[str, ...]:
    """The demo grammar's templates with ``field``'s slot as ``{c}``, other attributes dropped, every shape as noun."""
    out: dict[str, None] = {}
    for template in TEMPLATES:
        for shape in ((SLOT,) if field == "shape" else SHAPES):
            fill = {"size": "", "colour": "", "shape": shape, "where": ""}
            fill[DEMO_SLOTS[field]] = SLOT
            out[" ".join(template.format(**fill).split())] = None  # dedupe, keep order
    return tuple(out)


def demo_class_specs() -> dict[str, ClassSpec]:
    return {f: ClassSpec(f, tuple(names), demo_templates(f)) for f, names in DEMO_CLASSES.items()}


def fitting_demo_specs(emb: EmbeddingSet) -> list[ClassSpec]:
    """The built-in demo specs of the fields ``emb`` labels whose every label value is one of its class names."""
    specs = []
    for spec in demo_class_specs().values():
        seen = {str(lab[spec.field]) for rows in emb.labels.values() for lab in rows if spec.field in lab}
        if seen and seen <= set(spec.classnames):
            specs.append(spec)
    return specs


def _strings(value: Any, what: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{where}: {what} must be a non-empty list of non-empty strings")
    return tuple(value)


def load_class_specs(path: str) -> list[ClassSpec]:
    """The class specs of a ``--classes`` JSON file (one object or a list); ValueError naming file and key."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"--classes {path}: no such file")
    try:
        raw = read_bounded(p, MAX_CLASS_FILE_BYTES, "class file")
    except BoundedReadError as exc:
        raise ValueError(f"--classes {path}: {exc.reason}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"--classes {path}: not JSON ({exc})") from None
    entries = data if isinstance(data, list) else [data]
    specs = []
    for i, entry in enumerate(entries):
        where = f"--classes {path}" + (f"[{i}]" if isinstance(data, list) else "")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with field, classnames, templates")
        unknown = sorted(set(entry) - {"field", "classnames", "templates"})
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: field, classnames, templates)")
        if not isinstance(entry.get("field"), str) or not entry["field"]:
            raise ValueError(f"{where}: field must be a label field name (e.g. \"shape\")")
        raw = entry.get("classnames")
        words: tuple[str, ...] = ()
        if isinstance(raw, dict):  # {label value: the word a prompt uses}
            names = _strings(list(raw), "classnames", where)
            words = _strings(list(raw.values()), "classnames' words", where)
        else:
            names = _strings(raw, "classnames", where)
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: classnames has duplicates")
        templates = _strings(entry.get("templates"), "templates", where)
        missing = [t for t in templates if SLOT not in t]
        if missing:
            raise ValueError(f"{where}: template {missing[0]!r} has no {SLOT} for the class name")
        specs.append(ClassSpec(entry["field"], names, templates, words))
    return specs


def class_embeddings(spec: ClassSpec, embed_texts: EmbedTexts) -> np.ndarray:
    """(C, D): each class's prompts embedded, normalised, averaged over templates, re-normalised."""
    prompts = [p for c in spec.classnames for p in spec.prompts(c)]
    z = as_array(embed_texts(prompts)).reshape(len(spec.classnames), len(spec.templates), -1)  # (C, T, D)
    return as_array(z.mean(axis=1))


def zeroshot_classify(x, labels: Sequence[str], spec: ClassSpec, classes: np.ndarray) -> dict[str, Any]:
    """Label metrics of rows ``x`` (n, D) scored against class embeddings ``classes`` (C, D)."""
    scores = as_array(x) @ classes.T  # (n, C) cosine
    out = label_metrics(scores, spec.classnames, labels, most_frequent(labels) if labels else "")
    out["templates"] = len(spec.templates)
    return out


def zeroshot_embeddings(emb: EmbeddingSet, specs: Sequence[ClassSpec], embed_texts: EmbedTexts
                        ) -> dict[str, dict[str, dict[str, Any]]]:
    """{modality: {field: metrics}} for each non-text modality whose rows carry the field; class prompts
    are embedded once per field."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    cache: dict[str, np.ndarray] = {}
    for m in [m for m in emb.modalities if m != "text"]:
        for spec in specs:
            x, y = label_rows(emb, m, spec.field)
            if not y:
                continue
            if spec.field not in cache:
                cache[spec.field] = class_embeddings(spec, embed_texts)
            results.setdefault(m, {})[spec.field] = zeroshot_classify(x, y, spec, cache[spec.field])
    return results
