"""The model folder a run leaves for its users: everything to embed with, nothing else, nothing that runs code.

    runs/joint/model/
        config.json        resolved config + what rebuilding needs (modality specs, vocabulary, preprocessing)
        tokenizer.model    the sentencepiece model the run trained with (bytes tokenizer: tokenizer.json)
        model.safetensors  the EMA teacher's fp32 weights (``teacher.<name>``), config and tokenizer in the metadata
        README.md          model card: data, steps, final loss, the last retrieval table, how to load

The folder stands alone: ``model.safetensors`` names its tokenizer by the
relative path ``tokenizer.model`` (resolved beside the file), so a copy
anywhere loads with ``unimodal_free.load(folder)``. It is built in a temporary
sibling folder and renamed into place, so a crash never leaves half a folder.
Files get mode 0o666 less the umask, as every other file of the run (``save_export`` sets the
one safetensors would create 600).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from unimodal_free.batch import modality_specs
from unimodal_free.config import Config, alignment_on, config_to_dict
from unimodal_free.data.reading.elements import preprocessing
from unimodal_free.model.pooling import embedding_dim
from unimodal_free.run_dir import RunDir
from unimodal_free.store.checkpoints import TRAINER_STATE, CheckpointError, read_trainer_state
from unimodal_free.store.export import EXPORT_NAME, LoadedWeights, save_export
from unimodal_free.store.model_folder import BYTES_NAME, CARD_NAME, CONFIG_NAME, MODEL_FORMAT, SPM_NAME
from unimodal_free.store.rebuild import resolve_tokenizer
from unimodal_free.store.weights import load_weights
from unimodal_free.train.model_card import model_card
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors



VOCABULARY_WORDS = 40  # config.json's tokenizer.words: the most frequent whole-word pieces


@dataclass
class TrainingSummary:
    """What the model card says about the run; every field is optional (a converted checkpoint knows less)."""

    samples_seen: Optional[int] = None  # rows over all ranks
    rows: dict[str, int] = field(default_factory=dict)  # rows per modality, all ranks
    skipped_samples: Optional[int] = None
    final_loss: Optional[float] = None  # train/loss of the last log interval
    world_size: Optional[int] = None
    train_time_s: Optional[float] = None
    eval_step: Optional[int] = None  # the last periodic eval
    eval_results: dict[str, dict[str, Any]] = field(default_factory=dict)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unimodal_free")
    except PackageNotFoundError:
        return "unknown"


def model_config(cfg: Config, tokenizer, step: int) -> dict[str, Any]:
    """config.json: the resolved config plus the facts a reader should not have to derive."""
    d = cfg.data
    spm = tokenizer.reference["kind"] == "sentencepiece"
    return {
        "format": MODEL_FORMAT,
        "library": "unimodal_free",
        "library_version": _package_version(),
        "step": step,
        "weights": "teacher",
        "embedding_dim": embedding_dim(cfg.model, cfg.objective),
        "projected": alignment_on(cfg.objective),
        "pooling": cfg.eval.pooling,
        "tokenizer": {"kind": tokenizer.reference["kind"], "file": SPM_NAME if spm else BYTES_NAME,
                      "sha256": tokenizer.reference["sha256"], "vocab_size": tokenizer.vocab_size,
                      "words": tokenizer.word_pieces(VOCABULARY_WORDS)},  # a glimpse for the model card
        "modalities": {name: asdict(spec) for name, spec in modality_specs(d, tokenizer.vocab_size).items()},
        "preprocessing": preprocessing(d),
        "config": config_to_dict(cfg),
    }


def write_model_folder(out: str | os.PathLike, teacher: dict[str, torch.Tensor], cfg: Config, tokenizer,
                       step: int, summary: Optional[TrainingSummary] = None,
                       root: Optional[str | os.PathLike] = None) -> Path:
    """Build the folder beside ``out`` and rename it into place (an existing ``out`` is replaced).

    ``root``: the run directory ``out`` lies in (default ``out``'s parent); nothing is written through a link
    found there (``RunDir``)."""
    out = Path(out)
    files = RunDir(out.parent if root is None else root)
    tmp = files.fresh_dir(out.with_name(f".{out.name}.tmp{os.getpid()}"))  # a crashed earlier attempt goes first
    ref = tokenizer.reference
    if ref["kind"] == "sentencepiece":
        files.write_atomic(tmp / SPM_NAME, Path(ref["path"]).read_bytes())  # the bytes, not the source's mode
        local_ref = {**ref, "path": SPM_NAME}
    else:
        files.write_atomic(tmp / BYTES_NAME, json.dumps({"kind": ref["kind"], "vocab_size": tokenizer.vocab_size}) + "\n")
        local_ref = dict(ref)
    config = model_config(cfg, tokenizer, step)
    files.write_atomic(tmp / CONFIG_NAME, json.dumps(config, indent=2) + "\n")  # the facts first, the full config last
    save_export(tmp / EXPORT_NAME, {}, teacher, config_to_dict(cfg), local_ref, step, root=files.root)
    files.write_atomic(tmp / CARD_NAME, model_card(config, cfg, summary or TrainingSummary(), str(out)))
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if os.path.lexists(out):
        files.replace(out, old)  # a rename moves the name (a link there is moved, never followed)
    files.replace(tmp, out)
    files.remove(old)
    return out


def summary_of(weights: LoadedWeights) -> TrainingSummary:
    """What a checkpoint's trainer_state.json tells the card (samples, rows, ranks, time); little for a bare file."""
    if not os.path.lexists(Path(weights.source) / TRAINER_STATE):
        return TrainingSummary()
    state = read_trainer_state(weights.source)
    return TrainingSummary(samples_seen=state.get("samples_seen"), rows=state.get("rows_seen") or {},
                           skipped_samples=state.get("skipped_samples"), world_size=state.get("world_size"),
                           train_time_s=state.get("train_time_s"))


@usage_errors(ValueError, FileNotFoundError)
def main(argv: Optional[list[str]] = None) -> int:
    """``python -m unimodal_free.train.model_folder SOURCE OUT``: a model folder from an older run's weights."""
    p = ArgumentParser(prog="python -m unimodal_free.train.model_folder",
                                description="Write a model folder (config.json, tokenizer, teacher weights, model "
                                            "card) from a run directory, checkpoint or model.safetensors.")
    p.add_argument("source", help="run directory (its latest complete checkpoint), checkpoint or model.safetensors")
    p.add_argument("out", help="the folder to write (replaced if it exists)")
    p.add_argument("--tokenizer", default=None, help="a copy of the run's tokenizer, when its recorded path is gone")
    args = p.parse_args(argv)
    try:
        weights = load_weights(args.source)
        tokenizer = resolve_tokenizer(weights.tokenizer_ref, args.tokenizer, args.source, weights.cfg.data.demo_dir)
        if not weights.teacher:
            raise ValueError(f"{args.source}: holds no teacher weights")
        out = write_model_folder(args.out, weights.teacher, weights.cfg, tokenizer, int(weights.step or 0),
                                 summary_of(weights))
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {out} from {weights.source} (step {weights.step})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
