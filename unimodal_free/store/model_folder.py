"""The model folder's file names and its reader (:mod:`unimodal_free.train.model_folder` writes it, with its card).

    model/
        config.json        resolved config + what rebuilding needs (modality specs, vocabulary, preprocessing)
        tokenizer.model    the sentencepiece model the run trained with (bytes tokenizer: tokenizer.json)
        model.safetensors  the EMA teacher's fp32 weights (``teacher.<name>``), config and tokenizer in the metadata
        README.md          model card
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unimodal_free.bounded_read import read_json_bounded
from unimodal_free.config import config_to_dict
from unimodal_free.store.export import EXPORT_NAME, LoadedWeights, read_export

MODEL_FORMAT = "unimodal_free/model/1"
MODEL_DIR = "model"  # a run directory's model folder: run_dir/model
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
SPM_NAME = "tokenizer.model"
BYTES_NAME = "tokenizer.json"
# config.json holds the resolved config and a few facts: about 10 KB. Far larger is not ours; refused unread.
MAX_CONFIG_BYTES = 4 << 20


def read_folder_config(path: Path) -> Any:
    """``path/config.json`` parsed, bounded (a link is followed: a hub's cache links its files)."""
    return read_json_bounded(path / CONFIG_NAME, MAX_CONFIG_BYTES, "model config")


def is_model_folder(path: Path) -> bool:
    """A folder with our config.json (a run directory's config.json is the bare config: no ``format``).

    A config.json that cannot be read within its cap (a fifo, a device, gigabytes) raises one line naming it.
    """
    if not os.path.lexists(path / CONFIG_NAME):
        return False
    config = read_folder_config(path)
    return isinstance(config, dict) and config.get("format") == MODEL_FORMAT


def read_model_folder(path: Path) -> LoadedWeights:
    """The folder's weights; its config.json must be the config stored with them (an edit would not apply)."""
    weights = read_export(path / EXPORT_NAME)
    config = read_folder_config(path)
    if config.get("config") != json.loads(json.dumps(config_to_dict(weights.cfg))):
        raise ValueError(f"{path / CONFIG_NAME}: its config differs from the one stored in {path / EXPORT_NAME} "
                         "(the weights were trained with the stored one; restore config.json)")
    weights.source = str(path)
    return weights
