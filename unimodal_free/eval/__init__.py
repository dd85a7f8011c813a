"""Cross-modal retrieval eval: metrics, the trainer's periodic ``evaluate`` and the CLI."""

from unimodal_free.eval.evaluate import EvalOutput, evaluate

__all__ = ["EvalOutput", "evaluate"]
