"""benchmarks/structure.py, the benchmarks' structure row (issues 14 and 17): a step
with the loops of an optimizer's compiled step and trivial arithmetic. Timings
are never asserted; what is checked is that the rebuilt step has the optimizer's
passes and temporaries, and that the check would see it if not."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mxopt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import structure  # noqa: E402

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu",
                                reason="reads XLA:CPU's optimized HLO")

SHAPES = {"conv_weight": (3, 3, 16, 32), "conv_bias": (32,), "fc_weight": (64, 10)}
OPTIMIZERS = {
    # every RMSProp option, clip_weights' nudge and multipliers included
    "rmsprop_centered": lambda: mxopt.rmsprop(
        optax.cosine_decay_schedule(0.01, 100), centered=True, wd=1e-4, rescale_grad=1 / 32,
        clip_gradient=1.0, clip_weights=2.0, lr_mult={"*bias": 2.0}),
    "adam": lambda: mxopt.adam(0.001),
    "lamb": lambda: mxopt.lamb(0.001),  # per-leaf norms: reductions feeding the loops
}


def _trees():
    rng = np.random.RandomState(0)
    make = lambda s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return {k: make(s) for k, s in SHAPES.items()}, {k: make(s) for k, s in SHAPES.items()}


def _compiled(step, params, state, grads):
    return jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()


def _tx_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return step


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_structure_step_has_the_optimizers_passes_and_temporaries(name):
    params, grads = _trees()
    tx = OPTIMIZERS[name]()
    state = tx.init(params)
    reference = _compiled(_tx_step(tx), params, state, grads)
    step = structure.structure_step(reference.as_text(), params, state, grads)
    assert structure.verify(reference, _compiled(step, params, state, grads), len(SHAPES)) == []
    new_params, new_state = jax.jit(step)(params, state, grads)
    assert jax.tree.structure((new_params, new_state)) == jax.tree.structure((params, state))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_params))


def test_verify_sees_a_different_structure():
    params, grads = _trees()
    tx = OPTIMIZERS["adam"]()
    state = tx.init(params)
    reference = _compiled(_tx_step(tx), params, state, grads)

    def fewer_loops(params, state, grads):  # the floor: no loop reads the new state
        new = state._replace(**{f: jax.tree.map(lambda s, g: s * 0.9 + g, getattr(state, f), grads)
                                for f in ("mean", "var")})
        return jax.tree.map(lambda w, g: w + g, params, grads), new

    problems = structure.verify(reference, _compiled(fewer_loops, params, state, grads),
                                len(SHAPES))
    assert any("bytes accessed" in p for p in problems), problems


def test_unreadable_hlo_is_refused():
    with pytest.raises(structure.Unsupported, match="ENTRY"):
        structure.parse_entry("HloModule m\n")
