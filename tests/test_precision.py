"""multi_precision: float32 master weights for float16/bfloat16 params."""
import json
import os
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mxopt
from tests.conftest import GOLDEN_DIR

_MP = np.load(os.path.join(GOLDEN_DIR, "rmsprop_mp.npz"))
_MP_META = json.loads(str(_MP["meta"]))
_NUM = len(_MP_META["shapes"])
RTOL, ATOL = 1e-5, 1e-6


def _f16_ulps(a, b):
    """Distance in float16 ulps (ordered integer representation)."""
    def ordered(x):
        i = np.asarray(x, np.float16).view(np.int16).astype(np.int32)
        return np.where(i < 0, -(i & 0x7FFF), i)
    return np.abs(ordered(a) - ordered(b))


class GoldenMultiPrecisionTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*range(len(_MP_META["configs"])))
    def test_matches_mxnet_float16(self, c):
        cfg = _MP_META["configs"][c]
        params = [jnp.asarray(_MP[f"p{i}_w0"]) for i in range(_NUM)]
        tx = mxopt.rmsprop(multi_precision=True, **cfg)
        state = tx.init(params)

        @self.variant
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        for k in range(_MP_META["steps"]):
            params, state = step(params, state, [jnp.asarray(_MP[f"p{i}_grads"][k])
                                                 for i in range(_NUM)])
        for i in range(_NUM):
            got, want = np.asarray(params[i]), _MP[f"c{c}_p{i}_weight_step60"]
            assert got.dtype == np.float16
            assert _f16_ulps(got, want).max() <= 1, (got, want)
            np.testing.assert_allclose(state.master[i], _MP[f"c{c}_p{i}_master_step60"],
                                       rtol=RTOL, atol=ATOL)
            # The param is its master, cast: what MXNet's update_multi_precision does.
            np.testing.assert_array_equal(got, np.asarray(state.master[i]).astype(np.float16))
            inner = state.inner_state
            for name in ("n", "g_avg", "delta") if cfg["centered"] else ("n",):
                np.testing.assert_allclose(getattr(inner, name)[i], _MP[f"c{c}_p{i}_{name}"],
                                           rtol=RTOL, atol=ATOL)


# Huge gradients overflow float16 on purpose (non-finite results are skipped below).
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from([jnp.float16, jnp.bfloat16]),
       lr=st.floats(1e-5, 10.0), centered=st.booleans(), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(1e-4, 1e3))
def test_param_is_master_cast_bit_for_bit(dtype, lr, centered, seed, scale):
    rng = np.random.RandomState(seed)
    shape = (64,)
    # Adversarial: weights spanning many binades, exact zeros, tiny and huge steps.
    w = rng.normal(size=shape) * 10.0 ** rng.uniform(-6, 3, size=shape)
    w[::7] = 0.0
    params = {"w": jnp.asarray(w, dtype), "keep": jnp.ones(3, jnp.float32)}
    tx = mxopt.rmsprop(lr, centered=centered, multi_precision=True, wd=0.01)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(8):
        g = rng.normal(size=shape) * scale * 10.0 ** rng.uniform(-3, 3, size=shape)
        grads = {"w": jnp.asarray(g, dtype), "keep": jnp.ones(3, jnp.float32)}
        old = np.asarray(params["w"], np.float32)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        assert params["w"].dtype == dtype
        cast = np.asarray(state.master["w"].astype(dtype), np.float32)
        got = np.asarray(params["w"], np.float32)
        # Exact unless a weight shrank by more than 2**13 in one step (docstring).
        shrink_ok = np.abs(cast) * 2.0 ** 13 >= np.abs(old)
        finite = np.isfinite(cast)
        np.testing.assert_array_equal(got[shrink_ok & finite], cast[shrink_ok & finite])
        spacing = np.spacing(np.abs(old).astype(np.float32)) * 2 ** (23 - jnp.finfo(dtype).nmant)
        assert np.all(np.abs(got - cast)[~shrink_ok & finite] <= spacing[~shrink_ok & finite])


def test_mixed_tree_only_low_precision_leaves_get_masters():
    params = {"h": jnp.ones(3, jnp.float16), "b": jnp.ones(2, jnp.bfloat16),
              "f": jnp.ones(4, jnp.float32), "i": jnp.arange(3), "flag": jnp.asarray(True)}
    tx = mxopt.rmsprop(0.01, multi_precision=True)
    state = tx.init(params)
    assert state.master["h"].dtype == jnp.float32 and state.master["b"].dtype == jnp.float32
    for key in ("f", "i", "flag"):
        assert isinstance(state.master[key], optax.MaskedNode)
    for key in ("i", "flag"):
        assert isinstance(state.inner_state.n[key], optax.MaskedNode)
    grads = {"h": jnp.ones(3, jnp.float16), "b": jnp.ones(2, jnp.bfloat16),
             "f": jnp.ones(4, jnp.float32), "i": jnp.zeros(3, jax.dtypes.float0),
             "flag": jnp.zeros((), jax.dtypes.float0)}
    updates, state = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    chex.assert_trees_all_equal_dtypes(new, params)
    chex.assert_trees_all_equal(new["i"], params["i"])
    assert bool(new["flag"])
    assert float(new["f"][0]) < 1.0 and float(new["h"][0]) < 1.0


def test_float16_without_multi_precision_warns_once_and_runs():
    params = {"a": jnp.ones(3, jnp.float16), "b": jnp.ones(2, jnp.float16)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tx = mxopt.rmsprop(0.01)
        state = tx.init(params)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "multi_precision" in messages[0]
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    chex.assert_trees_all_equal_dtypes(updates, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mxopt.rmsprop(0.01, multi_precision=True).init(params)


def _bytes_per_element(state, numel):
    leaves = [x for x in jax.tree.leaves(state) if np.size(x) > 1 or np.ndim(x) > 0]
    return sum(x.size * x.dtype.itemsize for x in leaves) / numel


@pytest.mark.parametrize("centered, dtype, multi_precision, expected", [
    (False, jnp.float32, False, 4), (True, jnp.float32, False, 12),
    (False, jnp.float32, True, 4), (True, jnp.float32, True, 12),
    (False, jnp.float16, False, 2), (True, jnp.float16, False, 6),
    (False, jnp.float16, True, 8), (True, jnp.float16, True, 16),
    (False, jnp.bfloat16, True, 8), (True, jnp.bfloat16, True, 16),
])
def test_state_memory_per_element_matches_the_docs(centered, dtype, multi_precision, expected):
    params = {"w": jnp.ones((10, 10), dtype), "b": jnp.ones(10, dtype)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = mxopt.rmsprop(centered=centered, multi_precision=multi_precision).init(params)
    assert _bytes_per_element(state, 110) == expected


def _train_bf16(dtype, multi_precision, steps=400, lr=5e-4):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (256, 8))
    y = jnp.tanh(x @ jax.random.normal(k3, (8, 1)))
    params = {"w1": jax.random.normal(k2, (8, 32)), "b1": jnp.zeros(32),
              "w2": jax.random.normal(k3, (32, 1)) / 6, "b2": jnp.zeros(1)}
    params = jax.tree.map(lambda p: p.astype(dtype), params)

    def loss(p):
        # Compute in float32: what is under test is how the params are stored.
        p = jax.tree.map(lambda a: a.astype(jnp.float32), p)
        return jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tx = mxopt.rmsprop(lr, multi_precision=multi_precision)
        state = tx.init(params)

    @jax.jit
    def step(p, s):
        grads = jax.grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    for _ in range(steps):
        params, state = step(params, state)
    return float(loss(params))


def test_bfloat16_training_needs_master_weights():
    f32 = _train_bf16(jnp.float32, False)
    mp = _train_bf16(jnp.bfloat16, True)
    plain = _train_bf16(jnp.bfloat16, False)
    assert abs(mp - f32) <= 0.05 * f32, (mp, f32)
    # Steps below half an ulp of a bfloat16 weight are lost: training stalls.
    assert plain > 2 * f32, (plain, f32)


def test_gradient_dtype_or_shape_errors_name_the_leaf():
    params = {"layer": {"w": jnp.ones(3, jnp.float16)}}
    tx = mxopt.rmsprop(multi_precision=True)
    state = tx.init(params)
    # Any floating gradient updates the float32 masters, cast to float32 as
    # MXNet's mixed-precision kernels cast theirs; integers are refused.
    want = tx.update({"layer": {"w": jnp.full(3, 0.3, jnp.float32)}}, state, params)
    got = tx.update({"layer": {"w": jnp.full(3, 0.3, jnp.bfloat16).astype(jnp.float32)}},
                    state, params)
    # The float32 gradient reaches the state unrounded (the update, normalised
    # by RMSProp, may round alike).
    assert any(not np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(want[1]), jax.tree.leaves(got[1])))
    chex.assert_trees_all_equal(
        got, tx.update({"layer": {"w": jnp.full(3, 0.3, jnp.bfloat16)}}, state, params))
    with pytest.raises(TypeError, match="layer/w.*int32.*floating gradient"):
        tx.update({"layer": {"w": jnp.ones(3, jnp.int32)}}, state, params)
    with pytest.raises(ValueError, match="layer/w"):
        tx.update({"layer": {"w": jnp.ones(4, jnp.float16)}}, state, params)


def test_master_weights_wraps_any_optax_transformation():
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    tx = mxopt.master_weights(optax.sgd(1e-3))
    state = tx.init(params)
    for _ in range(10):
        updates, state = tx.update({"w": jnp.ones(4, jnp.bfloat16)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(state.master["w"], 1 - 10e-3, rtol=1e-6)
    chex.assert_trees_all_equal(params["w"], state.master["w"].astype(jnp.bfloat16))


def test_inject_hyperparams_with_bfloat16_params():
    # inject_hyperparams casts hyperparameters to the params' dtype (bfloat16).
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    tx = optax.inject_hyperparams(mxopt.rmsprop)(learning_rate=0.01, wd=0.001,
                                                 multi_precision=True)
    state = tx.init(params)
    updates, state = jax.jit(tx.update)({"w": jnp.ones(4, jnp.bfloat16)}, state, params)
    new = optax.apply_updates(params, updates)
    assert new["w"].dtype == jnp.bfloat16 and float(new["w"][0]) < 1.0
