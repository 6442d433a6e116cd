"""Shared plumbing of the golden-data scripts: import MXNet 1.9.1 from the side
venv, and write a compressed ``.npz`` under tests/golden with a JSON ``meta``."""
import json
import os
import sys

import numpy as np

GOLDEN_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           os.pardir, "tests", "golden"))


def import_mxnet():
    """MXNet 1.9.1, or exit with how to run the script."""
    try:
        import mxnet as mx
    except ImportError:
        sys.exit(f"{os.path.basename(sys.argv[0])} needs MXNet 1.9.1: python3 -m venv ../mxref "
                 "&& ../mxref/bin/pip install numpy==1.23.5 mxnet==1.9.1, then run it with "
                 "../mxref/bin/python")
    if mx.__version__ != "1.9.1":
        sys.exit(f"MXNet 1.9.1 is the reference, found {mx.__version__}")
    return mx


def golden_path(name):
    return os.path.join(GOLDEN_DIR, name)


def save_golden(name, arrays, meta, what, root=None):
    """Write ``arrays`` plus ``meta`` (as JSON) to tests/golden/``name`` (or
    ``root``/``name``, for a held-out run that is not committed)."""
    path = golden_path(name) if root is None else os.path.join(root, name)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    print(f"wrote {what} to {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
