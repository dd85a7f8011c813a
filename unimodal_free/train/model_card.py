"""The model folder's README.md: what was trained on what, how far, how well it retrieves, how to load it.

Hugging Face style: YAML front matter (``library_name``, ``tags``) and Markdown.
The retrieval table is :func:`unimodal_free.eval.report.format_table` of the
run's last periodic eval, as the eval CLI prints it.
"""

from __future__ import annotations

from typing import Any

from unimodal_free.config import Config
from unimodal_free.eval.report import format_table


def _count(n: Any) -> str:
    return "unknown" if n is None else f"{int(n):,}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _sources(sources, cfg: Config, split: str) -> str:
    if not sources:  # data.sources.resolve_sources fills in the demo corpus
        return f"the demo corpus, `{cfg.data.demo_dir}/{split}`"
    return "; ".join(f"`{s.path}`" + (f" (weight {s.weight:g})" if len(sources) > 1 else "") for s in sources)


def demo_heldout_for_own_data(cfg: Config) -> bool:
    """True when the run trains on its own shards but evaluates on the demo's held-out split (data.heldout unset)."""
    return bool(cfg.data.train) and not cfg.data.heldout


# A tokenizer of at most this many pieces is a closed vocabulary worth listing on the card (the demo's: 128).
SMALL_VOCABULARY = 1000


def _rows_per_modality(summary) -> str:
    """``image 1,234, speech 1,200, text 2,400``, or "" when unknown (not when resumed from an older run)."""
    if summary.rows and sum(summary.rows.values()) == summary.samples_seen:
        return ", ".join(f"{m} {_count(n)}" for m, n in summary.rows.items())
    return ""


def _trained_on(config: dict[str, Any], cfg: Config, summary) -> list[str]:
    """What the model has seen: the corpus and the caption vocabulary (what ``embed`` warns about)."""
    tok = config["tokenizer"]
    rows = _rows_per_modality(summary)
    corpus = (f"- **Corpus**: {_sources(cfg.data.train, cfg, 'train')}; "
              + (f"rows seen per modality: {rows}." if rows else "rows seen per modality: not recorded."))
    if tok["kind"] == "bytes":
        captions = ("- **Captions**: UTF-8 bytes (256 ids): any text encodes, and the model knows only the words "
                    "of the corpus above.")
    else:
        words = tok.get("words") or []
        small = tok["vocab_size"] <= SMALL_VOCABULARY
        captions = (f"- **Captions**: a sentencepiece vocabulary of {tok['vocab_size']:,} pieces"
                    + (", a small closed vocabulary" if small else "")
                    + (f"; its most frequent whole-word pieces: {', '.join(words)}" if small and words else "")
                    + ". A word outside it is spelled out in single letters and embeds with little meaning; "
                    "`embed` warns when most of a caption's words are such.")
    return [corpus, captions]


def _training_rows(config: dict[str, Any], cfg: Config, summary) -> list[tuple[str, str]]:
    rows = [
        ("steps", f"{config['step']:,} of `train.max_steps` = {cfg.train.max_steps:,}"),
        ("samples seen", f"{_count(summary.samples_seen)} rows over all ranks"
                         + (f" ({summary.world_size} rank(s))" if summary.world_size else "")),
    ]
    if _rows_per_modality(summary):
        rows.append(("rows per modality", _rows_per_modality(summary)))
    if summary.skipped_samples is not None:
        rows.append(("skipped samples", _count(summary.skipped_samples)))
    if summary.final_loss is not None:
        rows.append(("final loss", f"{summary.final_loss:.4f} (`train/loss`, mean of the last log interval)"))
    if summary.train_time_s is not None:
        rows.append(("training time", f"{_duration(summary.train_time_s)} in training steps"))
    rows += [
        ("training data (`data.train`)", _sources(cfg.data.train, cfg, "train")),
        ("held-out data (`data.heldout`)", _sources(cfg.data.heldout, cfg, "heldout")),
        ("model", f"d_model {cfg.model.d_model}, {cfg.model.num_latents} latents, {cfg.model.num_blocks} blocks, "
                  f"objective target `{cfg.objective.target_space}`, InfoNCE weight {cfg.objective.align_weight:g}"),
        ("tokenizer", f"{config['tokenizer']['kind']}, vocabulary {config['tokenizer']['vocab_size']}"
                      + (f", sha256 `{config['tokenizer']['sha256'][:16]}`" if config["tokenizer"]["sha256"] else "")),
    ]
    return rows


def _retrieval(cfg: Config, summary) -> list[str]:
    if not summary.eval_results:
        return ["No retrieval eval is recorded with these weights (a run's last periodic one appears here; "
                f"this run had `eval.every` = {cfg.eval.every}). Run one:", ""]
    return [
        f"The run's last periodic eval, at step {summary.eval_step}, of the {cfg.eval.model} on at most "
        f"{cfg.eval.max_samples:,} samples of `data.heldout` (recalls in percent, chance in parentheses; "
        "a pair's rows are each other's positives):",
        "",
        "```",
        format_table(summary.eval_results),
        "```",
        "",
        "Reproduce or extend it:",
        "",
    ]


def model_card(config: dict[str, Any], cfg: Config, summary, folder: str) -> str:
    """The README.md text; ``config`` is the folder's config.json, ``folder`` where it is written."""
    tok_file = config["tokenizer"]["file"]
    lines = [
        "---",
        "library_name: unimodal_free",
        "tags: [multimodal, image, speech, text, data2vec, perceiver, retrieval]",
        "---",
        "",
        f"# unimodal_free joint model, step {config['step']:,}",
        "",
        *([f"**Held-out data: the retrieval figures below are on the demo corpus's held-out split "
           f"(`{cfg.data.demo_dir}/heldout`), not on held-out data of this model's training corpus: "
           "`data.heldout` was unset.**", ""] if demo_heldout_for_own_data(cfg) else []),
        "One Perceiver-style encoder for image, speech and text, trained with a data2vec-style objective "
        "(a student on masked input regresses the EMA teacher's latents)"
        + (" plus InfoNCE alignment across modalities" if config["projected"] else "")
        + f". These are the EMA teacher's weights. An embedding is the mean of the final latents"
        + (", projected by the alignment head" if config["projected"] else "")
        + f", L2-normalised, {config['embedding_dim']} values.",
        "",
        "## What it was trained on",
        "",
        *_trained_on(config, cfg, summary),
        "",
        "## How to load",
        "",
        "```python",
        "from pathlib import Path",
        "import unimodal_free",
        "",
        f'embedder = unimodal_free.load("{folder}")  # this folder, wherever it lies now',
        'z = embedder.embed(["a caption", Path("photo.jpg"), Path("speech.wav")])  # (3, D), L2-normalised',
        "print(z[0] @ z[1:].T)  # cosine similarity of the caption with the picture and the recording",
        "```",
        "",
        "`embed` also takes PIL images, (C, H, W) image tensors (uint8, or float in [0, 1]) and "
        "(waveform, sample_rate) pairs; `embedder.preprocess(x)` returns what the model sees.",
        "From a shell:",
        "",
        "```",
        f'python -m unimodal_free.eval.query --checkpoint {folder} --text "a caption" --file photo.jpg speech.wav',
        f"python -m unimodal_free.eval --checkpoint {folder} --data path/to/heldout/shards --json results.json",
        "```",
        "",
        "Loading reads safetensors and JSON only: no pickle, nothing in this folder runs code.",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in _training_rows(config, cfg, summary)],
        "",
        "## Retrieval",
        "",
        *_retrieval(cfg, summary),
        "```",
        f"python -m unimodal_free.eval --checkpoint {folder} --data "
        + (" ".join(s.path for s in cfg.data.heldout) or f"{cfg.data.demo_dir}/heldout"),
        "```",
        "",
        "## Preprocessing",
        "",
        "| | |",
        "|---|---|",
        *[f"| {f'`data.{k}`' if hasattr(cfg.data, k) else k.replace('_', ' ')} | {v} |"
          for k, v in config["preprocessing"].items()],
        "",
        "Images: shorter side resized (bicubic) to `image_size`, centre crop, [0, 255] -> [-1, 1], "
        "`patch_size` square patches. Speech: mono, resampled to `sample_rate`, log-mel (25 ms / 10 ms), "
        "per-utterance normalised, cut at `max_speech_seconds`. Text: the tokenizer's ids, cut at `max_text_tokens`.",
        "",
        "## Files",
        "",
        "| file | what |",
        "|---|---|",
        "| `config.json` | the resolved training config (`config`) plus modality specs, vocabulary, preprocessing |",
        f"| `{tok_file}` | the tokenizer the model was trained with"
        + (" (a sentencepiece model, protobuf)" if tok_file.endswith(".model") else " (UTF-8 bytes: no file needed)")
        + " |",
        "| `model.safetensors` | the teacher's fp32 weights (`teacher.*`); config and tokenizer in the metadata |",
        f"| `README.md` | this card, generated by unimodal_free {config['library_version']} |",
        "",
    ]
    return "\n".join(lines)
