"""Research experiments on the joint model: each trains a few arms, evaluates them and writes a table.

    python -m unimodal_free.experiments NAME [--config configs/joint.json] [--ranks 2] [--set key=value ...] \
        [NAME's own options, listed by --help]

The arms, their overrides and the table of each experiment live in one module
per experiment; `runner` trains and evaluates arms, reusing a finished run
with the same command.
"""
