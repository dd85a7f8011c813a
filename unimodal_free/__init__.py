"""unimodal_free: one Perceiver-style model trained on image, speech and text (data2vec-style + InfoNCE).

``unimodal_free.load(path)`` returns an :class:`unimodal_free.embedder.Embedder`; the import of this
package stays light (torch and the model load on the first call).
"""

from __future__ import annotations

from typing import Any, Optional


def load(path: Any, device: Any = None, model: Optional[str] = "teacher", tokenizer: Optional[str] = None):
    """A model folder, run directory, checkpoint directory or ``model.safetensors`` -> its embedder.

    See :meth:`unimodal_free.embedder.Embedder.load`; safetensors only, no pickle, no code from the files.
    """
    # Here, not at the top: every ``import unimodal_free.<x>`` runs this file, and the CLIs refuse a bad flag
    # before torch loads; the embedder imports torch, the model and the data decoders.
    from unimodal_free.embedder import Embedder

    return Embedder.load(path, device, model, tokenizer)


__all__ = ["load"]
