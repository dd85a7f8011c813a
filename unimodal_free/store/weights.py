"""Weights, config and tokenizer reference from any run artefact, reading safetensors only.

An export file, a model folder, a checkpoint directory or a run directory (its
latest complete checkpoint's consolidation, else its final export): eval, query,
``unimodal_free.load`` and the model-folder converter all start here, and none
of them ever opens DeepSpeed's pickle files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from unimodal_free.store.checkpoints import CONSOLIDATED, is_complete, latest_tag, load_manifest, step_of, verify
from unimodal_free.store.export import EXPORT_NAME, LoadedWeights, read_export
from unimodal_free.store.model_folder import MODEL_DIR, is_model_folder, read_folder_config, read_model_folder


def _read_checkpoint(tag_dir: Path) -> LoadedWeights:
    """The consolidation inside a checkpoint, after checking its sha256 against COMPLETE."""
    if not (tag_dir / CONSOLIDATED).is_file():
        raise FileNotFoundError(
            f"{tag_dir}: holds no {CONSOLIDATED} (written by an older unimodal_free); eval and query read "
            f"safetensors only, never DeepSpeed's pickle files"
        )
    verify(tag_dir, only=[CONSOLIDATED])
    weights = read_export(tag_dir / CONSOLIDATED)
    weights.source = str(tag_dir)  # eval reports the checkpoint it evaluated
    return weights


def load_weights(path: str | Path) -> LoadedWeights:
    """Weights + config + tokenizer reference from an export file, a model folder, a run dir or a checkpoint dir.

    A run dir: its latest complete checkpoint's consolidation, else its final export.
    Reads safetensors only.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return read_export(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such export file or run directory")
    if is_model_folder(path):
        return read_model_folder(path)
    if step_of(path.name) is not None:
        if not is_complete(path):
            load_manifest(path)  # names COMPLETE and why, when COMPLETE is the problem
            raise ValueError(f"{path}: checkpoint is incomplete (a file its COMPLETE lists is missing or resized)")
        return _read_checkpoint(path)
    run_dir = path.parent if path.name == "checkpoints" else path
    tag = latest_tag(run_dir / "checkpoints")
    if tag is not None:
        return _read_checkpoint(run_dir / "checkpoints" / tag)
    if (run_dir / EXPORT_NAME).is_file():
        return read_export(run_dir / EXPORT_NAME)
    raise FileNotFoundError(f"{path}: holds neither a complete checkpoint nor {EXPORT_NAME}")


def run_model_folder(path: str | Path) -> Optional[Path]:
    """``path/model`` when ``path`` is a run directory whose model folder is as new as its latest complete checkpoint
    (a resumed run still training has newer checkpoints: then None, and the run's latest weights are read).

    The folder holds the tokenizer beside the weights, so a run directory keeps loading after the tokenizer it
    trained with has moved; the checkpoints name that tokenizer by its absolute path.
    """
    path = Path(path).expanduser()
    folder = path / MODEL_DIR
    if not path.is_dir() or is_model_folder(path) or step_of(path.name) is not None or not is_model_folder(folder):
        return None
    step = read_folder_config(folder).get("step")
    tag = latest_tag(path / "checkpoints")
    if tag is not None and (not isinstance(step, int) or isinstance(step, bool) or step_of(tag) > step):
        return None
    return folder
