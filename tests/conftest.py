"""Shared fixtures: the golden MXNet 1.9.1 trajectories and a trajectory runner."""
import json
import os

import jax
import numpy as np
import pytest

# The golden grid has float64 configurations; everything else states its dtypes.
jax.config.update("jax_enable_x64", True)

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")


class Golden:
    """tests/golden/rmsprop_core.npz, written by tools/make_golden.py."""

    def __init__(self, path):
        self.data = np.load(path)
        meta = json.loads(str(self.data["meta"]))
        self.configs = meta["configs"]
        self.steps = meta["steps"]
        self.record_steps = tuple(meta["record_steps"])
        self.num_params = len(meta["shapes"])

    def inputs(self, dtype):
        """Initial weights and gradient sequences: lists indexed by parameter."""
        w0 = [self.data[f"{dtype}_p{i}_w0"] for i in range(self.num_params)]
        grads = [self.data[f"{dtype}_p{i}_grads"] for i in range(self.num_params)]
        return w0, grads

    def weight(self, c, i, step):
        return self.data[f"c{c}_p{i}_weight_step{step}"]

    def state(self, c, i, name):
        return self.data[f"c{c}_p{i}_{name}"]


@pytest.fixture(scope="session")
def golden():
    return Golden(os.path.join(GOLDEN_DIR, "rmsprop_core.npz"))


def config_id(cfg):
    parts = ["centered" if cfg["centered"] else "plain", cfg["dtype"],
             f"lr{cfg['learning_rate']}", f"wd{cfg['wd']}", f"rg{cfg['rescale_grad']}",
             f"cg{cfg['clip_gradient']}", f"cw{cfg['clip_weights']}",
             f"g{cfg['gamma1']}-{cfg['gamma2']}", f"eps{cfg['epsilon']}"]
    return "_".join(map(str, parts))


def rmsprop_kwargs(cfg):
    """mxopt.rmsprop keyword arguments for a golden configuration."""
    return dict(learning_rate=cfg["learning_rate"], gamma1=cfg["gamma1"], gamma2=cfg["gamma2"],
                epsilon=cfg["epsilon"], centered=cfg["centered"],
                clip_weights=cfg["clip_weights"], wd=cfg["wd"],
                rescale_grad=cfg["rescale_grad"], clip_gradient=cfg["clip_gradient"])


# CI explores the same hypothesis examples every run; locally they vary.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
