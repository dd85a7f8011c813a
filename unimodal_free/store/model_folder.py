"""Reading a model folder (the folder a run leaves for its users; :mod:`unimodal_free.train.model_folder` writes it).

    model/
        config.json        resolved config + what rebuilding needs (modality specs, vocabulary, preprocessing)
        tokenizer.model    the sentencepiece model the run trained with (bytes tokenizer: tokenizer.json)
        model.safetensors  the EMA teacher's fp32 weights (``teacher.<name>``), config and tokenizer in the metadata
        README.md          model card
"""

from __future__ import annotations

import json
from pathlib import Path

from unimodal_free.config import config_to_dict
from unimodal_free.store.export import EXPORT_NAME, LoadedWeights, read_export

MODEL_FORMAT = "unimodal_free/model/1"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
SPM_NAME = "tokenizer.model"
BYTES_NAME = "tokenizer.json"


def is_model_folder(path: Path) -> bool:
    """A folder with our config.json (a run directory's config.json is the bare config: no ``format``)."""
    try:
        return json.loads((path / CONFIG_NAME).read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_model_folder(path: Path) -> LoadedWeights:
    """The folder's weights; its config.json must be the config stored with them (an edit would not apply)."""
    weights = read_export(path / EXPORT_NAME)
    config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    if config.get("config") != json.loads(json.dumps(config_to_dict(weights.cfg))):
        raise ValueError(f"{path / CONFIG_NAME}: its config differs from the one stored in {path / EXPORT_NAME} "
                         "(the weights were trained with the stored one; restore config.json)")
    weights.source = str(path)
    return weights
