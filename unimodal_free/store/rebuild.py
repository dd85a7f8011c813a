"""From stored weights to a model ready to embed with: its tokenizer (refused unless it is the run's own)
and the model rebuilt from the config stored with the weights.

The eval and query CLIs, ``unimodal_free.load``, the experiments and the model-folder converter share it.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from unimodal_free.batch import modality_specs
from unimodal_free.config import ConfigError, check_budget
from unimodal_free.data.loading.sources import tokenizer_spec
from unimodal_free.data.reading.tokenizer import check_tokenizer_compatible, load_tokenizer
from unimodal_free.model import build_model


class EvalError(ValueError):
    """Bad input to eval, query, the embedder or the model-folder converter; one line naming the file or flag."""


def resolve_tokenizer(ref: dict, spec: Optional[str], checkpoint: str, demo_dir: str = ""):
    """The tokenizer to read the data with; refused unless it is the checkpoint's own."""
    if spec is None:
        if ref.get("kind") == "bytes":
            spec = "bytes"
        else:
            spec = ref.get("path") or ""
            if not spec or not os.path.isfile(spec):
                raise EvalError(
                    f"checkpoint {checkpoint} was trained with tokenizer {spec or '?'} "
                    f"(sha256 {ref.get('sha256')}), which is missing here: pass --tokenizer PATH to a copy of it"
                )
    elif spec not in ("bytes", "demo") and not os.path.isfile(os.path.expanduser(spec)):
        raise EvalError(f"--tokenizer {spec}: file not found (checkpoint {checkpoint} expects {ref.get('path')})")
    tokenizer = load_tokenizer(tokenizer_spec(spec, demo_dir))
    check_tokenizer_compatible(ref, tokenizer.reference, f"checkpoint {checkpoint} vs --tokenizer {spec}")
    return tokenizer


def load_model(weights, which: str, vocab_size: int, checkpoint: str) -> torch.nn.Module:
    """Rebuild the model from the stored config and load the teacher's or student's weights."""
    state = getattr(weights, which)
    if not state:
        raise EvalError(f"checkpoint {checkpoint}: holds no {which} weights")
    try:  # with the tokenizer's vocabulary now: the text embedding counts too
        check_budget(weights.cfg, vocab_size)
    except ConfigError as exc:
        raise EvalError(f"{weights.source or checkpoint}: stored config: {exc}") from None
    model = build_model(weights.cfg.model, weights.cfg.objective, modality_specs(weights.cfg.data, vocab_size))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EvalError(
            f"checkpoint {checkpoint}: {which} weights do not fit the stored config "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return model
