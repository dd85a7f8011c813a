"""A run's data: configured sources -> shard URLs (``sources``), rows -> batches (``bucketing``), the DataLoader.

``loader.make_train_loader`` / ``make_eval_loader`` are what the trainer, the eval and the tools call.
"""
