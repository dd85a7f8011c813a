"""Load DeepSpeed's checkpoint files with ``torch.load(weights_only=True)`` and a small allow-list.

DeepSpeed 0.19.8's ``TorchCheckpointEngine.load`` calls ``torch.load(...,
weights_only=False)``: any global a file names would be imported and called.
Its files hold tensors, dicts, lists, numbers and strings (which torch's
weights-only unpickler reads) plus, under ZeRO 1-3, three plain DeepSpeed
data classes: the static ``LossScaler``, the ``ZeroStageEnum`` and the
dataclass ``fragment_address`` (found with
``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints this
trainer wrote under ZeRO 0, 2 and 3, fp32 and bf16). Allow-listing them runs
no code beyond setting their fields. :class:`WeightsOnlyCheckpointEngine`
replaces the engine's loader for the duration of ``load_checkpoint``;
:func:`unimodal_free.store.checkpoints.files_to_unpickle` decides which files may be
unpickled in full (signed by this user, or trusted). DeepSpeed (heavy) is imported only inside the
functions that name its classes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Iterable, Iterator

import torch


def _allowed_enums() -> tuple:
    from deepspeed.runtime.zero.config import ZeroStageEnum

    return (ZeroStageEnum,)


def enum_member(cls, name: str):
    """What ``builtins.getattr`` may do in a weights-only load: name a member of an allow-listed enum.

    Some Python builds (Debian 12's 3.11.2) pickle an enum member by name, as
    ``getattr(ZeroStageEnum, "gradients")``, where others call the class with
    its value. ``getattr`` itself can reach any attribute, so the loader maps
    the global to this function instead, which returns enum members only.
    """
    if cls in _allowed_enums() and isinstance(name, str) and name in cls.__members__:
        return cls[name]
    raise pickle.UnpicklingError(f"getattr({getattr(cls, '__name__', type(cls).__name__)}, {name!r}) "
                                 f"is not a member of an allow-listed enum")


def allowed_globals() -> list:
    """The DeepSpeed classes its ZeRO optimizer files pickle; nothing callable beyond constructors
    (and ``getattr`` only as :func:`enum_member`)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, *_allowed_enums(), fragment_address, (enum_member, "builtins.getattr")]


def _name(obj) -> str:
    if isinstance(obj, tuple):  # (replacement, the global's dotted name)
        return obj[1]
    return f"{obj.__module__}.{obj.__qualname__}"


def unsafe_globals(path: str | Path) -> list[str]:
    """Globals ``path`` would need beyond the weights-only allow-list, read from its pickle opcodes (runs nothing).

    A file torch cannot scan (not a torch zip archive) is reported as needing ``<unscannable>``.
    """
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - whatever it is, it is not a file we can vouch for
        return ["<unscannable: not a torch zip checkpoint>"]
    allowed = {_name(g) for g in allowed_globals()}
    return [g for g in found if g not in allowed]


def load_weights_only(path: str | Path, map_location=None):
    """``torch.load`` with ``weights_only=True`` and the allow-list; a refused global is a one-line UnpicklingError."""
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            first = next((line for line in lines if "Unsupported global" in line or "allow-listed enum" in line), "")
            raise pickle.UnpicklingError(f"{path}: refused by the weights-only loader {first.strip()}".strip()) from None


def _engine_class():
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        """TorchCheckpointEngine whose ``load`` unpickles in full only the files listed in ``unpickle``."""

        def __init__(self, config_params=None, unpickle: Iterable[str | Path] = ()):
            super().__init__(config_params)
            self.unpickle = {os.path.realpath(p) for p in unpickle}

        def load(self, path: str, map_location=None):
            if os.path.realpath(path) in self.unpickle:
                return torch.load(path, map_location=map_location, weights_only=False)
            return load_weights_only(path, map_location)

    return WeightsOnlyCheckpointEngine


@contextlib.contextmanager
def weights_only_engine(engine, unpickle: Iterable[str | Path] = ()) -> Iterator[None]:
    """Inside: ``engine.load_checkpoint`` reads every file weights-only, except ``unpickle`` (signed/trusted files)."""
    original = engine.checkpoint_engine
    engine.checkpoint_engine = _engine_class()(getattr(engine, "_config", None), unpickle)
    try:
        yield
    finally:
        engine.checkpoint_engine = original
