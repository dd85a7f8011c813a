"""What a run leaves on disk, one file per artefact: the checkpoint folder, the export file, the model folder.

``checkpoints.py`` and ``export.py`` hold their format's writer and its reader; ``model_folder.py``
the model folder's names and reader (its writer, ``train/model_folder.py``, also writes the model
card, which formats eval's retrieval table). ``train/`` keeps what needs the engine. Below
``train/`` and below ``eval/``, the embedder and the experiments, so neither side imports the
other. Reading never opens a pickle except through :mod:`unimodal_free.store.safe_load` (resume only).
"""
