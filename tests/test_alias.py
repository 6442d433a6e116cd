"""mxopt.rmsprop against MXNet 1.9.1's golden trajectories, with and without jit."""
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import mxopt
from mxopt import reference
from tests.conftest import GOLDEN_DIR, Golden, config_id, rmsprop_kwargs

_GOLDEN = Golden(os.path.join(GOLDEN_DIR, "rmsprop_core.npz"))
_CONFIGS = [(config_id(cfg), c) for c, cfg in enumerate(_GOLDEN.configs)]

# Tolerance against MXNet after 60 steps where bit-exactness is not promised
# (README, "Numerics"): weight clipping, and backends other than XLA:CPU. The
# worst case on the golden grid is about 4% of it.
RTOL, ATOL = 1e-5, 1e-6
ON_CPU = jax.default_backend() == "cpu"


def run(tx, w0, grads, steps, step_fn=None):
    """Run ``tx`` over the golden gradients; yield (step, params, state)."""
    params = {f"p{i}": jnp.asarray(w) for i, w in enumerate(w0)}
    state = tx.init(params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = step_fn(step) if step_fn else step
    for k in range(steps):
        g = {f"p{i}": jnp.asarray(gs[k]) for i, gs in enumerate(grads)}
        params, state = step(params, state, g)
        yield k + 1, params, state


class GoldenTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*_CONFIGS)
    def test_matches_mxnet(self, c):
        cfg = _GOLDEN.configs[c]
        w0, grads = _GOLDEN.inputs(cfg["dtype"])
        tx = mxopt.rmsprop(**rmsprop_kwargs(cfg))
        # Each operation rounds once, in MXNet's order, with or without jit: bit
        # for bit, except where clip_weights must be expressed as an additive update.
        exact = ON_CPU and not cfg["clip_weights"]
        # The last state is checked after the loop.
        for step, params, state in run(tx, w0, grads, _GOLDEN.steps, self.variant):  # noqa: B007
            if step not in _GOLDEN.record_steps:
                continue
            for i in range(len(w0)):
                got, want = np.asarray(params[f"p{i}"]), _GOLDEN.weight(c, i, step)
                self.assertEqual(got.dtype, want.dtype)
                if exact:
                    np.testing.assert_array_equal(got, want, err_msg=f"p{i} step {step}")
                else:
                    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                               err_msg=f"p{i} step {step}")
        names = ("n", "g_avg", "delta") if cfg["centered"] else ("n",)
        for name in names:
            for i in range(len(w0)):
                np.testing.assert_allclose(getattr(state, name)[f"p{i}"], _GOLDEN.state(c, i, name),
                                           rtol=RTOL, atol=ATOL, err_msg=f"{name} p{i}")
        self.assertEqual(int(state.count), _GOLDEN.steps)


@pytest.mark.parametrize("c", [c for _, c in _CONFIGS if c % 5 == 0 or c >= 96])
def test_chain_agrees_with_alias(c):
    cfg = _GOLDEN.configs[c]
    w0, grads = _GOLDEN.inputs(cfg["dtype"])
    fused = run(mxopt.rmsprop(**rmsprop_kwargs(cfg)), w0, grads, 60, jax.jit)
    chain = run(mxopt.rmsprop_chain(**rmsprop_kwargs(cfg)), w0, grads, 60, jax.jit)
    for (_, p1, _), (_, p2, _) in zip(fused, chain):
        chex.assert_trees_all_close(p1, p2, rtol=RTOL, atol=ATOL)


@pytest.mark.filterwarnings("ignore:.*float16/bfloat16 parameter:UserWarning")  # by design
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
@pytest.mark.parametrize("jit", [False, True])
def test_dtypes_preserved(centered, dtype, jit):
    params = {"w": jnp.linspace(-1, 1, 12, dtype=dtype).reshape(3, 4), "b": jnp.ones(3, dtype)}
    grads = jax.tree.map(lambda p: (p * 3 + 0.5).astype(dtype), params)
    tx = mxopt.rmsprop(0.01, centered=centered, clip_weights=0.7, wd=0.01, rescale_grad=0.5,
                       clip_gradient=1.0)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for _ in range(3):
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    for tree in (updates, params, state.n) + ((state.g_avg, state.delta) if centered else ()):
        chex.assert_trees_all_equal_dtypes(tree, {"w": jnp.zeros(1, dtype),
                                                  "b": jnp.zeros(1, dtype)})
    bound = jnp.asarray(0.7, dtype)
    assert all(bool(jnp.all(jnp.abs(p) <= bound)) for p in jax.tree.leaves(params))
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))


@pytest.mark.filterwarnings("ignore:.*float16/bfloat16 parameter:UserWarning")  # by design
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_follows_reference(dtype):
    # float16 kernels in the weight's dtype, op for op (MXNet itself refuses
    # float16 without multi_precision; this pins down mxopt's own semantics).
    rng = np.random.RandomState(3)
    w = rng.normal(size=50).astype(dtype)
    n = np.zeros_like(w)
    params = {"w": jnp.asarray(w)}
    tx = mxopt.rmsprop(0.01, wd=0.1, rescale_grad=0.5, clip_gradient=2.0)
    state = tx.init(params)
    for _ in range(5):
        g = rng.normal(size=50).astype(dtype)
        w, n = reference.rmsprop_update(w, g, n, lr=0.01, wd=0.1, rescale_grad=0.5,
                                        clip_gradient=2.0)
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(params["w"]), w)
    np.testing.assert_array_equal(np.asarray(state.n["w"]), n)


def test_schedule_uses_optax_count():
    lrs = [0.1, 0.05, 0.02, 0.01]
    schedule = optax.piecewise_constant_schedule(0.1, {1: 0.5, 2: 0.4, 3: 0.5})
    rng = np.random.RandomState(0)
    w = rng.normal(size=7).astype(np.float32)
    n, g_avg, delta = (np.zeros_like(w),) * 3
    params = {"w": jnp.asarray(w)}
    tx = mxopt.rmsprop(schedule, centered=True)
    state = tx.init(params)
    for lr in lrs:
        g = rng.normal(size=7).astype(np.float32)
        w, n, g_avg, delta = reference.rmspropalex_update(w, g, n, g_avg, delta, lr=lr)
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(params["w"]), w)


@pytest.mark.parametrize("centered", [False, True])
def test_jax_scalar_and_traced_hyperparameters_agree_with_floats(centered):
    hp = dict(learning_rate=0.03, gamma1=0.8, gamma2=0.7, epsilon=1e-6, clip_weights=0.5,
              wd=0.02, rescale_grad=0.3, clip_gradient=0.25)
    rng = np.random.RandomState(1)
    params = {"a": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    grads = [{"a": jnp.asarray(rng.normal(size=(4, 3)) * 3, jnp.float32)} for _ in range(5)]

    def trajectory(**kw):
        tx = mxopt.rmsprop(centered=centered, **kw)
        p, s = params, tx.init(params)
        for g in grads:
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
        return p

    expected = trajectory(**hp)
    as_arrays = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
    chex.assert_trees_all_equal(trajectory(**as_arrays), expected)
    # Traced: every hyperparameter is a jit argument; nothing may branch on it.
    traced = jax.jit(lambda kw: trajectory(**kw))(as_arrays)
    chex.assert_trees_all_close(traced, expected, rtol=RTOL, atol=ATOL)
    # A traced 0 switches clipping off, as a static 0 does.
    off = dict(as_arrays, clip_gradient=jnp.float32(0), clip_weights=jnp.float32(0))
    static_off = dict(hp, clip_gradient=0, clip_weights=0)
    chex.assert_trees_all_close(jax.jit(lambda kw: trajectory(**kw))(off),
                                trajectory(**static_off), rtol=RTOL, atol=ATOL)


def test_inject_hyperparams_changes_lr_without_recompiling():
    tx = optax.inject_hyperparams(mxopt.rmsprop, static_args=("centered",))(
        learning_rate=0.1, centered=True, clip_weights=1.0)
    params = {"w": jnp.ones(5)}
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for lr in (0.1, 0.01, 0.001):
        state.hyperparams["learning_rate"] = jnp.asarray(lr)
        params, state = step(params, state, {"w": jnp.full(5, 0.5)})
    assert len(traces) == 1


def test_update_needs_params():
    tx = mxopt.rmsprop()
    state = tx.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": jnp.ones(3)}, state)


def test_works_inside_optax_chain():
    tx = optax.chain(optax.clip_by_global_norm(1.0), mxopt.rmsprop(0.1, centered=True))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    updates, state = jax.jit(tx.update)({"w": jnp.full(3, 10.0)}, state, params)
    assert isinstance(state[1], mxopt.CenteredRMSPropState)
    assert jnp.all(jnp.isfinite(updates["w"]))


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(gamma1=1.0), ValueError, "gamma1"),
    (dict(gamma1=-0.1), ValueError, "gamma1"),
    (dict(gamma2=1.5), ValueError, "gamma2"),
    (dict(gamma2=1.0, centered=True), ValueError, "gamma2"),
    (dict(epsilon=-1e-8), ValueError, "epsilon"),
    (dict(clip_weights=-0.1), ValueError, "clip_weights"),
    (dict(clip_gradient=-1.0), ValueError, "clip_gradient"),
    (dict(learning_rate="0.1"), TypeError, "learning_rate"),
    (dict(learning_rate=None), TypeError, "learning_rate"),
    (dict(learning_rate=jnp.ones(3)), TypeError, "learning_rate"),
    (dict(learning_rate=-0.1), ValueError, "learning_rate"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(wd=float("inf")), ValueError, "wd"),
    (dict(wd=-0.1), ValueError, "wd"),
    (dict(rescale_grad=0.0), ValueError, "rescale_grad"),
    (dict(rescale_grad=True), TypeError, "rescale_grad"),
    (dict(centered="yes"), TypeError, "centered"),
    (dict(gamma1=jnp.asarray(2.0)), ValueError, "gamma1"),
    (dict(epsilon=1 + 2j), TypeError, "epsilon"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        mxopt.rmsprop(**kwargs)


def test_unknown_keyword_is_named():
    with pytest.raises(TypeError, match="momentum"):
        mxopt.rmsprop(momentum=0.9)
    with pytest.raises(TypeError, match="positional"):
        mxopt.rmsprop(0.1, 0.9, 0.9, 1e-8, False, None, 1.0)  # wd etc. are keyword-only
