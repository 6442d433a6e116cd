"""lr_mult / wd_mult read from Flax NNX variable metadata."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mxopt
from mxopt import multipliers


class Net(nnx.Module):
    def __init__(self, rngs):
        self.body = nnx.Linear(3, 4, rngs=rngs)
        self.head = nnx.Param(jnp.ones((4, 2)), lr_mult=0.1, wd_mult=0.0)
        self.bias = nnx.Param(jnp.zeros(2), lr_mult=2.0)


def test_from_nnx_reads_metadata_by_module_path():
    net = Net(nnx.Rngs(0))
    assert multipliers.from_nnx(net, "lr_mult") == {"head": 0.1, "bias": 2.0}
    assert multipliers.from_nnx(net, "wd_mult") == {"head": 0.0}
    state = nnx.state(net, nnx.Param)
    names = jax.tree.leaves(multipliers.leaf_names(state))
    assert sorted(names) == ["bias", "body/bias", "body/kernel", "head"]


def test_nnx_optimizer_applies_the_metadata_multipliers():
    jax.config.update("jax_enable_x64", False)
    try:
        net = Net(nnx.Rngs(0))
        before = {k: np.asarray(v) for k, v in nnx.to_pure_dict(nnx.state(net, nnx.Param)).items()
                  if not isinstance(v, dict)}
        tx = mxopt.rmsprop(0.01, wd=0.1, lr_mult=multipliers.from_nnx(net, "lr_mult"),
                           wd_mult=multipliers.from_nnx(net, "wd_mult"))
        optimizer = nnx.Optimizer(net, tx, wrt=nnx.Param)
        grads = jax.tree.map(jnp.ones_like, nnx.state(net, nnx.Param))
        optimizer.update(net, grads)
        # First RMSProp step: |step| = lr * lr_mult * g / sqrt((1 - gamma1) g^2),
        # with g = 1 + wd * wd_mult * w.
        g_head = 1.0  # wd_mult 0
        step_head = 0.01 * 0.1 * g_head / np.sqrt(0.1 * g_head ** 2)
        np.testing.assert_allclose(before["head"] - np.asarray(net.head[...]), step_head,
                                   rtol=1e-5)
        step_bias = 0.01 * 2.0 / np.sqrt(0.1)  # bias starts at 0: no decay term
        np.testing.assert_allclose(before["bias"] - np.asarray(net.bias[...]), step_bias,
                                   rtol=1e-5)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_bad_metadata_is_named():
    class Bad(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(2), lr_mult=-1.0)

    with pytest.raises(ValueError, match="lr_mult of 'w'"):
        multipliers.from_nnx(Bad(), "lr_mult")
    with pytest.raises(TypeError, match="nnx.Module"):
        multipliers.from_nnx({"w": 1.0}, "lr_mult")
