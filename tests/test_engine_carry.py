"""The engine's carried scalar (``_engine.Carry``): one value advanced leaf by
leaf in the params' flatten order, kept in the state from step to step,
identical with and without ``jax.jit``, and untouched by a skipped step."""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mxopt import _engine as E
from mxopt import _kernels as K


class DoublingState(NamedTuple):
    count: Any
    scale: Any
    seen: Any


def _doubling_kernel(grad, weight, seen, hp, finite):
    # The update is the carried value this leaf saw; ``seen`` records it.
    value = jnp.asarray(hp["scale"], grad.dtype)
    return jnp.full_like(grad, value), K.keep_if(finite, jnp.full_like(seen, value), seen)


def _doubling(per_leaf=True, **kwargs):
    carry = E.Carry("scale", 1.0, lambda c, hp: (dict(scale=2 * c), 2 * c), per_leaf=per_leaf)
    opt = E.Optimizer("doubling", _doubling_kernel, DoublingState, {}, carry=carry)
    return E.fused(opt, learning_rate=0.1, wd=0.0, lr_mult=None, wd_mult=None,
                   begin_num_update=0, **kwargs)


def _params():
    # Flatten order: sorted keys, so a, b, c; the int leaf is skipped.
    return {"c": jnp.zeros(2), "a": jnp.zeros(3), "n": jnp.arange(2), "b": jnp.zeros(1)}


def _grads(params, nan=False):
    g = {k: (jnp.ones_like(x) if k != "n" else np.zeros(x.shape, jax.dtypes.float0))
         for k, x in params.items()}
    if nan:
        g["b"] = g["b"].at[0].set(jnp.nan)
    return g


def _run(update, steps=2):
    params = _params()
    tx = _doubling()
    state = tx.init(params)
    assert float(state.scale) == 1.0 and state.scale.dtype == jnp.float64
    seen = []
    for _ in range(steps):
        updates, state = update(tx)(_grads(params), state, params)
        seen.append({k: float(updates[k][0]) for k in ("a", "b", "c")})
    return seen, state


def test_carry_advances_per_leaf_in_flatten_order_across_steps():
    seen, state = _run(lambda tx: tx.update)
    assert seen == [{"a": 2.0, "b": 4.0, "c": 8.0}, {"a": 16.0, "b": 32.0, "c": 64.0}]
    assert float(state.scale) == 64.0 and int(state.count) == 2


def test_carry_is_the_same_under_jit():
    eager, s1 = _run(lambda tx: tx.update)
    jitted, s2 = _run(lambda tx: jax.jit(tx.update))
    assert eager == jitted
    assert s2.scale.dtype == s1.scale.dtype and float(s2.scale) == float(s1.scale)


def test_a_skipped_step_keeps_the_carry():
    params = _params()
    tx = _doubling(skip_nonfinite=True)
    state = tx.init(params)
    step = jax.jit(tx.update)
    _, state = step(_grads(params), state, params)
    _, state = step(_grads(params, nan=True), state, params)
    assert float(state.inner_state.scale) == 8.0
    updates, state = step(_grads(params), state, params)
    assert float(updates["a"][0]) == 16.0 and int(state.total_notfinite) == 1


def test_carry_survives_master_weights():
    params = {"a": jnp.zeros(3, jnp.float16), "b": jnp.zeros(2, jnp.float32)}
    tx = _doubling(multi_precision=True)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert float(updates["a"][0]) == 2.0 and float(updates["b"][0]) == 4.0
    assert float(state.inner_state.scale) == 4.0


def test_a_per_step_carry_advances_once_per_step():
    params = _params()
    tx = _doubling(per_leaf=False)
    state = tx.init(params)
    seen = []
    for _ in range(2):
        updates, state = jax.jit(tx.update)(_grads(params), state, params)
        seen.append({k: float(updates[k][0]) for k in ("a", "b", "c")})
    assert seen == [{"a": 2.0, "b": 2.0, "c": 2.0}, {"a": 4.0, "b": 4.0, "c": 4.0}]
    assert float(state.scale) == 4.0
