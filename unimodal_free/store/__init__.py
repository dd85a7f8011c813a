"""What a run leaves on disk, and reading it back: the read side of checkpoints, exports and model folders.

Below ``train/`` (which writes these files: CheckpointManager, save_export,
write_model_folder) and below ``eval/``, the embedder and the experiments
(which read them), so neither side imports the other. Reading never opens a
pickle except through :mod:`unimodal_free.store.safe_load` (resume only).
"""
