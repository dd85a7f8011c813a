"""``python -m unimodal_free.eval``: cross-modal retrieval of a checkpoint (see eval/cli.py);
``python -m unimodal_free.eval probe|zeroshot``: label classifiers on its frozen features (eval/probe_cli.py);
``python -m unimodal_free.eval attributes``: attribute precision, probes and R@1 against targets (eval/attributes_cli.py)."""

import sys

if len(sys.argv) > 1 and sys.argv[1] in ("probe", "zeroshot"):
    from unimodal_free.eval.probe_cli import main as label_main  # scikit-learn: imported only for these

    sys.exit(label_main(sys.argv[1], sys.argv[2:]))
if len(sys.argv) > 1 and sys.argv[1] == "attributes":
    from unimodal_free.eval.attributes_cli import main as attributes_main  # scikit-learn too

    sys.exit(attributes_main(sys.argv[2:]))

from unimodal_free.eval.cli import main

sys.exit(main())
