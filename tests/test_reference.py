"""The NumPy reference reproduces MXNet 1.9.1 bit for bit on the golden grid."""
import numpy as np
import pytest

from mxopt import reference
from tests.conftest import config_id


def run_reference(cfg, w0, grads, steps):
    """Yield (step, weights, states) of the reference over the gradient sequence."""
    kwargs = dict(lr=cfg["learning_rate"], gamma1=cfg["gamma1"], epsilon=cfg["epsilon"],
                  wd=cfg["wd"], rescale_grad=cfg["rescale_grad"],
                  clip_gradient=cfg["clip_gradient"], clip_weights=cfg["clip_weights"])
    weights = [w.copy() for w in w0]
    states = [[np.zeros_like(w)] * (3 if cfg["centered"] else 1) for w in w0]
    for step in range(1, steps + 1):
        for i, w in enumerate(weights):
            if cfg["centered"]:
                weights[i], *states[i] = reference.rmspropalex_update(
                    w, grads[i][step - 1], *states[i], gamma2=cfg["gamma2"], **kwargs)
            else:
                weights[i], *states[i] = reference.rmsprop_update(
                    w, grads[i][step - 1], *states[i], **kwargs)
        yield step, weights, states


def test_golden_grid_covers_the_issue(golden):
    seen = {(c["centered"], c["wd"] > 0, c["rescale_grad"] != 1.0, c["clip_gradient"],
             c["clip_weights"] is not None) for c in golden.configs}
    for centered in (False, True):
        for cg in (None, 0.0, 0.4):
            for cw in (False, True):
                assert (centered, True, True, cg, cw) in seen
    assert golden.steps >= 50


def test_reference_matches_mxnet_bitwise(golden):
    mismatches = []
    for c, cfg in enumerate(golden.configs):
        w0, grads = golden.inputs(cfg["dtype"])
        # The last states are checked after the loop.
        for step, weights, states in run_reference(cfg, w0, grads, golden.steps):  # noqa: B007
            if step not in golden.record_steps:
                continue
            for i, w in enumerate(weights):
                expected = golden.weight(c, i, step)
                assert w.dtype == expected.dtype
                if not np.array_equal(w, expected):
                    mismatches.append((config_id(cfg), i, step))
        names = ("n", "g_avg", "delta") if cfg["centered"] else ("n",)
        for i, state in enumerate(states):
            for name, s in zip(names, state):
                if not np.array_equal(s, golden.state(c, i, name)):
                    mismatches.append((config_id(cfg), i, name))
    assert not mismatches, mismatches[:10]


@pytest.mark.parametrize("bound, on", [(None, False), (0, False), (0.0, False), (-1.0, False),
                                       (0.5, True)])
def test_clip_switch_follows_mxnet(bound, on):
    # Python passes the bound only when truthy; the kernel clips only when >= 0.
    assert reference.clip_is_on(bound) is on


def test_hyperparameters_round_through_float32():
    # 1 - 0.9 computed from float32(0.9) in float32, as the kernel does.
    one_minus = np.float32(1.0) - reference.hyperparameter(0.9, np.float32)
    assert one_minus != np.float32(1 - 0.9)
    assert reference.hyperparameter(0.1, np.float64) == np.float64(np.float32(0.1))


def test_reference_rejects_mixed_dtypes():
    w = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="dtype"):
        reference.rmsprop_update(w, np.zeros(3, np.float64), w, lr=0.1)
