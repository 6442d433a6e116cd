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


def make_updater(mx, opt, cfg, names):
    """MXNet's optimizer ``opt`` built from a golden configuration (its kwargs,
    a FactorScheduler, ``param_idx2name`` from ``names``, lr/wd multipliers),
    and its ``get_updater``: ``(optimizer, updater)``."""
    kwargs = dict(cfg["kwargs"])
    if cfg["scheduler"]:
        kwargs["lr_scheduler"] = mx.lr_scheduler.FactorScheduler(**cfg["scheduler"])
    if cfg["idx2name"]:
        kwargs["param_idx2name"] = dict(enumerate(names))
    optimizer = mx.optimizer.create(opt, **kwargs)
    if cfg["lr_mult"]:
        optimizer.set_lr_mult(dict(cfg["lr_mult"]))
    if cfg["wd_mult"]:
        optimizer.set_wd_mult(dict(cfg["wd_mult"]))
    return optimizer, mx.optimizer.get_updater(optimizer)


# Held-out runs (--heldout SEED): the numbers a configuration draws anew (a 0 or
# None stays so), and how: "rate" scales by 10**U(-0.5, 0.5), "unit" moves a
# value in [0, 1) to 1 - (1 - x) * 10**U(-0.3, 0.3) (kept below 1), "count" adds
# an integer in [0, 7].
HELDOUT_RULES = {
    "learning_rate": "rate", "wd": "rate", "rescale_grad": "rate", "clip_gradient": "rate",
    "epsilon": "rate", "eps": "rate", "lamda1": "rate", "lamda": "rate", "beta": "rate",
    "wd_lh": "rate", "schedule_decay": "rate", "base_lr": "rate", "warmup_begin_lr": "rate",
    "eta": "rate", "lower_bound": "rate", "upper_bound": "rate",
    "momentum": "unit", "beta1": "unit", "beta2": "unit", "rho": "unit", "factor": "unit",
    "begin_num_update": "count", "step": "count", "warmup_epochs": "count",
    "updates_per_epoch": "count", "begin_epoch": "count",
}


def draw(value, rule, rng):
    if value == 0 and rule != "count":  # off stays off
        return value
    if rule == "rate":
        return float(value * 10.0 ** rng.uniform(-0.5, 0.5))
    if rule == "unit":
        return float(min(1.0 - (1.0 - value) * 10.0 ** rng.uniform(-0.3, 0.3), 0.999))
    return int(value + rng.randint(0, 8))


def held_out(cfg, rng):
    """``cfg`` with its numbers drawn around the grid's (HELDOUT_RULES)."""
    for section in ("kwargs", "scheduler"):
        values = cfg[section] or {}
        for key in sorted(values):
            rule = HELDOUT_RULES.get(key)
            if rule and not isinstance(values[key], bool) and values[key] is not None:
                values[key] = draw(values[key], rule, rng)
    if cfg["scheduler"]:
        cfg["scheduler"]["step"] = max(1, cfg["scheduler"]["step"])
    return cfg
