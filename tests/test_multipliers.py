"""Per-parameter lr_mult / wd_mult: resolution rules and their effect on rmsprop."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mxopt
from mxopt import multipliers, reference

PARAMS = {"fc1_weight": jnp.ones((3, 2)), "fc1_bias": jnp.ones(2),
          "bn_gamma": jnp.ones(2), "bn_beta": jnp.ones(2)}
NESTED = {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
          "LayerNorm_0": {"scale": jnp.ones(2)}, "layers": [jnp.ones((2, 2))]}


def test_leaf_names_join_key_paths():
    assert multipliers.leaf_names(NESTED) == {
        "Dense_0": {"kernel": "Dense_0/kernel", "bias": "Dense_0/bias"},
        "LayerNorm_0": {"scale": "LayerNorm_0/scale"}, "layers": ["layers/0"]}
    assert multipliers.leaf_names(PARAMS)["fc1_weight"] == "fc1_weight"


def test_dict_names_and_patterns():
    got = multipliers.resolve({"fc1_bias": 2.0, "fc1_*": 0.5, "*": 3.0}, PARAMS)
    # exact name first; then the first matching pattern in dict order
    assert got == {"fc1_weight": 0.5, "fc1_bias": 2.0, "bn_gamma": 3.0, "bn_beta": 3.0}
    got = multipliers.resolve({"Dense_0/*": 0.1}, NESTED)
    assert got["Dense_0"] == {"kernel": 0.1, "bias": 0.1} and got["layers"] == [1.0]


def test_unmatched_name_is_an_error_with_a_suggestion():
    with pytest.raises(ValueError, match="fc1_wieght.*did you mean 'fc1_weight'"):
        multipliers.resolve({"fc1_wieght": 2.0}, PARAMS)
    with pytest.raises(ValueError, match="conv"):
        multipliers.resolve({"conv*": 2.0}, PARAMS)


def test_tree_and_callable_specs():
    tree = jax.tree.map(lambda _: 2.0, NESTED)
    assert jax.tree.leaves(multipliers.resolve(tree, NESTED)) == [2.0] * 4
    with pytest.raises(ValueError, match="structure"):
        multipliers.resolve({"Dense_0": {"kernel": 1.0}}, NESTED)
    # A flat dict of numbers is read as names: a non-leaf name is an unmatched name.
    with pytest.raises(ValueError, match="did you mean 'Dense_0/bias'"):
        multipliers.resolve({"Dense_0": 1.0}, NESTED)
    got = multipliers.resolve(lambda name, leaf: float(leaf.ndim), NESTED)
    assert got["Dense_0"] == {"kernel": 2.0, "bias": 1.0}


@pytest.mark.parametrize("spec, exc", [
    ({"fc1_weight": -1.0}, ValueError), ({"fc1_weight": float("nan")}, ValueError),
    ({"fc1_weight": "2"}, TypeError), ({"fc1_weight": True}, TypeError),
    (lambda n, leaf: -0.5, ValueError), (lambda n, leaf: None, TypeError),
    (3.0, ValueError),
])
def test_bad_values_name_the_argument(spec, exc):
    with pytest.raises(exc, match="wd_mult"):
        multipliers.resolve(spec, PARAMS, "wd_mult")


def test_naming_rules():
    module = multipliers.resolve(multipliers.mxnet_module_wd_mult, PARAMS)
    assert module == {"fc1_weight": 1.0, "fc1_bias": 0.0, "bn_gamma": 1.0, "bn_beta": 0.0}
    flax = multipliers.resolve(multipliers.no_decay_for_biases_and_norms, NESTED)
    assert flax == {"Dense_0": {"kernel": 1.0, "bias": 0.0}, "LayerNorm_0": {"scale": 0.0},
                    "layers": [1.0]}


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_rmsprop_applies_lr_times_mult_and_wd_times_mult(centered, jit):
    lr, wd = 0.03, 0.02
    lr_mult = {"fc1_weight": 0.1, "bn_*": 3.0}
    rng = np.random.RandomState(0)
    params = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in PARAMS.items()}
    eff_lr = multipliers.resolve(lr_mult, params)
    eff_wd = multipliers.resolve(multipliers.mxnet_module_wd_mult, params)
    tx = mxopt.rmsprop(lr, centered=centered, wd=wd, lr_mult=lr_mult,
                       wd_mult=multipliers.mxnet_module_wd_mult, clip_gradient=1.0)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    ref = {k: (np.asarray(v), [np.zeros(v.shape, np.float32)] * (3 if centered else 1))
           for k, v in params.items()}
    for _ in range(5):
        grads = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for k, (w, s) in ref.items():
            # MXNet: lr * lr_mult and wd * wd_mult in float64, then float32.
            kw = dict(lr=lr * eff_lr[k], wd=wd * eff_wd[k], clip_gradient=1.0)
            if centered:
                w, *s = reference.rmspropalex_update(w, np.asarray(grads[k]), *s, **kw)
            else:
                w, *s = reference.rmsprop_update(w, np.asarray(grads[k]), *s, **kw)
            ref[k] = (w, s)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, params),
                                {k: w for k, (w, _) in ref.items()})


def test_rmsprop_reports_a_bad_multiplier_name_at_init():
    tx = mxopt.rmsprop(lr_mult={"fc2_weight": 2.0})
    with pytest.raises(ValueError, match="lr_mult.*fc2_weight"):
        tx.init(PARAMS)


def test_multipliers_with_a_schedule():
    schedule = optax.linear_schedule(0.1, 0.01, 10)
    params = {"a": jnp.ones(3), "b": jnp.ones(3)}
    tx = mxopt.rmsprop(schedule, lr_mult={"a": 0.0})
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
    assert np.all(np.asarray(updates["a"]) == 0) and np.all(np.asarray(updates["b"]) < 0)


@pytest.mark.parametrize("centered", [False, True])
def test_chain_with_multipliers_agrees_with_alias(centered):
    rng = np.random.RandomState(1)
    params = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in PARAMS.items()}
    kw = dict(centered=centered, wd=0.05, lr_mult={"bn_*": 0.5},
              wd_mult=multipliers.mxnet_module_wd_mult)
    results = []
    for make in (mxopt.rmsprop, mxopt.rmsprop_chain):
        tx, p = make(0.01, **kw), params
        s = tx.init(p)
        for k in range(3):
            g = jax.tree.map(lambda x, k=k: jnp.sin(x * (k + 1)), p)
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
        results.append(p)
    chex.assert_trees_all_close(*results, rtol=1e-6, atol=1e-7)


def test_scale_by_lr_mult_in_any_chain():
    params = {"w": jnp.ones(2), "bias": jnp.ones(2)}
    tx = optax.chain(optax.sgd(0.1), mxopt.scale_by_lr_mult({"bias": 2.0}))
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1)
    np.testing.assert_allclose(updates["bias"], -0.2)
    with pytest.raises(ValueError, match="lr_mult"):
        mxopt.scale_by_lr_mult({"weight": 2.0}).init(params)
