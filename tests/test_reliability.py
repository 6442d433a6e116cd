"""Bad input, odd trees, non-finite gradients, numerical edge cases, round trips."""
import pickle
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mxopt
from mxopt import _kernels, reference
from mxopt._mxnumbers import received_float


def _step(tx, params, grads, state=None, jit=True):
    state = tx.init(params) if state is None else state
    update = jax.jit(tx.update) if jit else tx.update
    updates, state = update(grads, state, params)
    return optax.apply_updates(params, updates), state


# ---- odd trees, one case at a time -------------------------------------------

@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("params", [
    {}, [], (), {"a": {}},
    {"scalar": jnp.asarray(1.5)},
    {"empty": jnp.zeros((0, 3))},
    {"w": jnp.ones(2), "none": None},
    {"int": jnp.arange(3), "bool": jnp.asarray([True, False]), "w": jnp.ones(2)},
], ids=["empty-dict", "empty-list", "empty-tuple", "nested-empty", "scalar", "zero-size",
        "none-leaf", "int-bool-leaves"])
def test_odd_trees_work(params, centered):
    tx = mxopt.rmsprop(0.1, centered=centered, wd=0.1, clip_weights=1.0)

    def grad_of(p):
        if p is None:
            return None
        if jnp.issubdtype(p.dtype, jnp.floating):
            return jnp.ones_like(p)
        return np.zeros(p.shape, jax.dtypes.float0)

    grads = jax.tree.map(grad_of, params, is_leaf=lambda x: x is None)
    new, state = _step(tx, params, grads)
    chex.assert_trees_all_equal_structs(new, params)
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(new)):
        assert p.dtype == q.dtype and p.shape == q.shape
        if not jnp.issubdtype(p.dtype, jnp.floating):
            chex.assert_trees_all_equal(p, q)  # untouched, no state
    assert int(state.count) == 1


def test_structure_mismatch_names_the_problem():
    tx = mxopt.rmsprop()
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="structure of the params"):
        tx.update({"a": jnp.ones(2)}, state, params)
    with pytest.raises(ValueError, match="'b'.*shape"):
        tx.update({"a": jnp.ones(2), "b": jnp.ones(3)}, state, params)
    with pytest.raises(TypeError, match="'b'.*dtype"):
        tx.update({"a": jnp.ones(2), "b": jnp.ones(2, jnp.int32)}, state, params)


def test_state_from_other_params_is_an_error():
    tx = mxopt.rmsprop(centered=True)
    state = tx.init({"a": jnp.ones(2)})
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.raises(ValueError):
        tx.update(jax.tree.map(jnp.ones_like, params), state, params)


# ---- non-finite gradients ------------------------------------------------------

def _without_guard(state):
    """The optimizer state minus apply_if_finite's own counters."""
    if isinstance(state, mxopt.MasterWeightsState):
        return state.master, state.inner_state.inner_state
    return state.inner_state


def params_int_dtype():
    return jnp.arange(2).dtype


@pytest.mark.parametrize("centered", [False, True])
def test_nan_gradient_propagates_by_default_as_in_mxnet(centered):
    params = {"w": jnp.ones(3)}
    new, state = _step(mxopt.rmsprop(0.1, centered=centered), params,
                       {"w": jnp.asarray([jnp.nan, 1.0, 1.0])})
    assert np.isnan(new["w"][0]) and np.all(np.isfinite(new["w"][1:]))
    assert np.isnan(state.n["w"][0])


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("multi_precision", [False, True])
def test_skip_nonfinite_steps_keeps_params_and_state(centered, multi_precision):
    # The documented policy: skip_nonfinite=True (optax.apply_if_finite, placed
    # inside the float32 master weights when there are any).
    tx = mxopt.rmsprop(0.05, centered=centered, multi_precision=multi_precision, wd=0.01,
                       skip_nonfinite=True)
    dtype = jnp.float16 if multi_precision else jnp.float32
    params = {"w": jnp.linspace(-1, 1, 6, dtype=dtype), "k": jnp.arange(2)}
    # Integer leaves get a zero update in their own dtype; apply_if_finite needs
    # the gradients to carry that dtype too (not float0).
    good = {"w": jnp.full(6, 0.5, dtype), "k": jnp.zeros(2, params_int_dtype())}
    params, state = _step(tx, params, good)
    before_params, before_state = params, state
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        grads = {"w": good["w"].at[2].set(bad), "k": good["k"]}
        params, state = _step(tx, params, grads, state)
        chex.assert_trees_all_equal(params, before_params)
        chex.assert_trees_all_equal(_without_guard(state), _without_guard(before_state))
    guard = state.inner_state if multi_precision else state
    assert int(guard.total_notfinite) == 3
    params, state = _step(tx, params, good, state)
    guard = state.inner_state if multi_precision else state
    assert int(guard.notfinite_count) == 0 and int(guard.inner_state.count) == 2
    assert np.all(np.isfinite(np.asarray(params["w"], np.float32)))


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_skip_nonfinite_is_apply_if_finite_without_the_cond(centered, jit):
    # Same state (type and counters) and the same bits as wrapping the plain
    # optimizer in optax.apply_if_finite, over good and bad steps in a row.
    kw = dict(centered=centered, wd=0.01, clip_gradient=0.5, clip_weights=0.9,
              lr_mult={"b": 2.0})
    ours = mxopt.rmsprop(optax.cosine_decay_schedule(0.05, 10), skip_nonfinite=True, **kw)
    theirs = optax.apply_if_finite(mxopt.rmsprop(optax.cosine_decay_schedule(0.05, 10), **kw),
                                   max_consecutive_errors=2**31 - 1)
    rng = np.random.RandomState(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
    states = [ours.init(params), theirs.init(params)]
    chex.assert_trees_all_equal_structs(*states)
    p_ours = p_theirs = params
    bad = [False, True, True, False, True, False, False]
    for i, is_bad in enumerate(bad):
        grads = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                 "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
        if is_bad:
            grads["b"] = grads["b"].at[i % 4].set([jnp.nan, jnp.inf, -jnp.inf][i % 3])
        outs = []
        for tx, p, state in ((ours, p_ours, states[0]), (theirs, p_theirs, states[1])):
            update = jax.jit(tx.update) if jit else tx.update
            u, state = update(grads, state, p)
            outs.append((optax.apply_updates(p, u), state))
        chex.assert_trees_all_equal(outs[0], outs[1])
        (p_ours, states[0]), (p_theirs, states[1]) = outs
    assert int(states[0].total_notfinite) == 3 and int(states[0].inner_state.count) == 4


@pytest.mark.parametrize("jit", [False, True])
def test_skip_nonfinite_tells_an_overflowing_sum_from_a_nonfinite_gradient(jit):
    # The check sums the gradients; finite gradients whose float32 sum
    # overflows (to inf, or to NaN as inf - inf across leaves) are still a step.
    tx = mxopt.rmsprop(1e-3, skip_nonfinite=True)
    update = jax.jit(tx.update) if jit else tx.update
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    params = {"a": f32(np.zeros(4)), "b": f32(np.zeros(3))}
    cases = [({"a": f32(np.full(4, 3e38)), "b": f32(np.zeros(3))}, True),
             ({"a": f32(np.full(4, 3e38)), "b": f32(np.full(3, -3e38))}, True),
             ({"a": f32([3e38, 1.0, np.inf, 0.0]), "b": f32(np.full(3, -3e38))}, False),
             ({"a": f32(np.zeros(4)), "b": f32([1.0, np.nan, 1.0])}, False)]
    for grads, finite in cases:
        assert not bool(jnp.isfinite(sum(jnp.sum(g) for g in grads.values()))) or not finite
        _, state = update(grads, tx.init(params), params)
        assert bool(state.last_finite) == finite
        assert int(state.total_notfinite) == (0 if finite else 1)
        assert int(state.inner_state.count) == (1 if finite else 0)


@pytest.mark.filterwarnings("ignore:.*float16/bfloat16 parameter:UserWarning")  # by design
@pytest.mark.parametrize("multi_precision", [False, True])
def test_skip_nonfinite_takes_a_flag_checked_elsewhere(multi_precision):
    # grads_finite (e.g. from dynamic loss scaling) replaces mxopt's own check:
    # the same results when it agrees with the gradients, and it decides when
    # it does not.
    dtype = jnp.bfloat16 if multi_precision else jnp.float32
    tx = mxopt.rmsprop(0.05, wd=0.01, multi_precision=multi_precision, skip_nonfinite=True)
    params = {"w": jnp.linspace(-1, 1, 6, dtype=dtype)}
    good = {"w": jnp.full(6, 0.5, dtype)}
    bad = {"w": good["w"].at[1].set(jnp.nan)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for grads, flag in ((good, True), (bad, False)):
        chex.assert_trees_all_equal(update(grads, state, params),
                                    update(grads, state, params, grads_finite=jnp.asarray(flag)))
    skipped, skipped_state = update(good, state, params, grads_finite=jnp.asarray(False))
    assert not np.any(np.asarray(skipped["w"], np.float32))
    guard = skipped_state.inner_state if multi_precision else skipped_state
    assert int(guard.total_notfinite) == 1
    with pytest.raises(TypeError, match="grads_finite must be a scalar bool"):
        tx.update(good, state, params, grads_finite=jnp.ones(2, bool))
    with pytest.raises(TypeError, match="grads_finite must be a scalar bool"):
        tx.update(good, state, params, grads_finite=1.0)
    plain = mxopt.rmsprop(0.05)
    with pytest.raises(TypeError, match="only used with skip_nonfinite=True"):
        plain.update(good, plain.init(params), params, grads_finite=jnp.asarray(True))


def test_rmsprop_ignores_other_transformations_extra_args():
    # optax.chain passes every extra update keyword to each member that takes some.
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 0.5)}
    for skip in (False, True):
        tx = optax.chain(mxopt.rmsprop(0.1, skip_nonfinite=skip), optax.scale(1.0))
        state = tx.init(params)
        chex.assert_trees_all_equal(tx.update(grads, state, params),
                                    tx.update(grads, state, params, value=jnp.ones(())))


# ---- numerical edge cases against the reference ------------------------------

@pytest.mark.parametrize("grad, epsilon", [
    (0.0, 1e-8), (1e30, 1e-8), (-1e30, 1e-8), (1e-30, 1e-8), (1e-30, 0.0), (0.0, 0.0),
    (3e38, 1e-8),
])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_edge_values_match_mxnet_reference(grad, epsilon, centered, jit):
    w0 = np.asarray([0.5, -0.25, 0.0], np.float32)
    g = np.full(3, grad, np.float32)
    tx = mxopt.rmsprop(0.01, epsilon=epsilon, centered=centered)
    new, state = _step(tx, {"w": jnp.asarray(w0)}, {"w": jnp.asarray(g)}, jit=jit)
    zeros = np.zeros_like(w0)
    if centered:
        want, *_ = reference.rmspropalex_update(w0, g, zeros, zeros, zeros, lr=0.01,
                                                epsilon=epsilon)
    else:
        want, _ = reference.rmsprop_update(w0, g, zeros, lr=0.01, epsilon=epsilon)
    # Bit for bit, NaN included: e.g. a zero gradient with epsilon 0 is 0/0 = NaN
    # in MXNet, and mxopt does not guard it (README, "Numerics").
    np.testing.assert_array_equal(np.asarray(new["w"]), want)


def test_centered_variance_rounding_negative_gives_nan_like_mxnet():
    # n - g_avg**2 + eps < 0 by rounding: both MXNet and mxopt return NaN.
    w = np.asarray([1.0], np.float32)
    n, g_avg, delta = (np.asarray([x], np.float32) for x in (1.0, 1.0000001, 0.0))
    tx = mxopt.rmsprop(0.01, gamma1=0.999999, epsilon=0.0, centered=True)
    state = mxopt.CenteredRMSPropState(count=jnp.asarray(0, jnp.int32), n={"w": n},
                                       g_avg={"w": g_avg}, delta={"w": delta})
    new, _ = _step(tx, {"w": jnp.asarray(w)}, {"w": jnp.asarray(w)}, state)
    want, *_ = reference.rmspropalex_update(w, w, n, g_avg, delta, lr=0.01, gamma1=0.999999,
                                            epsilon=0.0)
    assert np.isnan(want[0])
    np.testing.assert_array_equal(np.asarray(new["w"]), want)


# ---- state round trips ----------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(), dict(centered=True),
                                    dict(centered=True, multi_precision=True)])
def test_pickled_state_continues_bit_identically(kwargs):
    rng = np.random.RandomState(0)
    dtype = jnp.float16 if kwargs.get("multi_precision") else jnp.float32
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), dtype)}
    grads = [{"w": jnp.asarray(rng.normal(size=(4, 3)), dtype)} for _ in range(6)]
    tx = mxopt.rmsprop(0.01, wd=0.01, **kwargs)
    p, s = params, tx.init(params)
    for g in grads[:3]:
        p, s = _step(tx, p, g, s)
    p2, s2 = pickle.loads(pickle.dumps((p, s)))
    chex.assert_trees_all_equal(s2, s)
    for g in grads[3:]:
        p, s = _step(tx, p, g, s)
        p2, s2 = _step(tx, p2, g, s2)
    chex.assert_trees_all_equal((p, s), (p2, s2))


# ---- property suite over random trees, dtypes and hyperparameters ------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_DTYPES = ["float16", "bfloat16", "float32", "float64", "int32"]
_leaf = st.tuples(st.sampled_from(_DTYPES),
                  st.lists(st.integers(0, 4), min_size=0, max_size=2).map(tuple))
_trees = st.recursive(_leaf, lambda children: st.one_of(
    st.dictionaries(st.sampled_from(["a", "b", "kernel", "bias"]), children, max_size=3),
    st.lists(children, max_size=3)), max_leaves=6)
_hyper = st.fixed_dictionaries(dict(
    learning_rate=st.floats(0.0, 0.1), gamma1=st.floats(0.0, 0.99), gamma2=st.floats(0.0, 0.99),
    epsilon=st.floats(1e-8, 1e-3), wd=st.floats(0.0, 0.1), rescale_grad=st.floats(0.1, 2.0),
    clip_gradient=st.one_of(st.none(), st.floats(0.1, 2.0)),
    clip_weights=st.one_of(st.none(), st.floats(0.5, 2.0)),
    centered=st.booleans(), multi_precision=st.booleans()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_trees, hp=_hyper, seed=st.integers(0, 2**16))
def test_invariants_over_random_trees(spec, hp, seed):
    rng = np.random.RandomState(seed)

    def build(s, grad=False):
        if isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str):
            dtype, shape = s
            if dtype == "int32":
                return jnp.zeros(shape, jnp.int32) if grad else jnp.asarray(
                    rng.randint(-5, 5, size=shape), jnp.int32)
            return jnp.asarray(rng.normal(size=shape), dtype)
        if isinstance(s, dict):
            return {k: build(v, grad) for k, v in s.items()}
        return [build(v, grad) for v in s]

    params, grads = build(spec), build(spec, grad=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float16 without multi_precision warns, by design
        tx = mxopt.rmsprop(**hp)
        state = tx.init(params)
    new, state = _step(tx, params, grads, state)
    new, state = _step(tx, new, grads, state)
    chex.assert_trees_all_equal_structs(new, params)
    bound = hp["clip_weights"]
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(new)):
        assert q.dtype == p.dtype and q.shape == p.shape
        if p.dtype == jnp.int32:
            chex.assert_trees_all_equal(p, q)
        elif bound:
            # The bound as MXNet's kernel parses str(bound) (dmlc::stof).
            b = np.float32(jnp.asarray(received_float(bound)).astype(p.dtype))
            assert not np.any(np.abs(np.asarray(q, np.float32)) > b)
    inner = state.inner_state if hp["multi_precision"] else state
    floats = [p for p in jax.tree.leaves(params) if p.dtype != jnp.int32]
    buffers = jax.tree.leaves(inner.n)  # integer leaves have no state (MaskedNode)
    assert [n.shape for n in buffers] == [p.shape for p in floats]
    assert all(n.dtype == (jnp.float32 if hp["multi_precision"] and p.dtype in (
        jnp.float16, jnp.bfloat16) else p.dtype) for n, p in zip(buffers, floats))
    assert int(inner.count) == 2


def test_a_steps_shared_hyperparameters_stay_on_its_own_thread():
    """The scalars a step shares among its leaves (one barrier per value) belong
    to the trace that made them: a step traced on another thread at the same
    time must make its own, or it would read a tracer of a foreign trace."""
    like = jnp.zeros(3, jnp.float32)
    with _kernels.sharing_hypers():
        _kernels.share_hypers([0.5], like)
        mine = _kernels.hyper(0.5, like)
        assert _kernels.hyper(0.5, like) is mine  # shared within the step
        seen = []
        other = threading.Thread(target=lambda: seen.append(_kernels.hyper(0.5, like)))
        other.start()
        other.join()
        assert seen and seen[0] is not mine
        assert float(seen[0]) == float(mine) == 0.5

    def step_on_thread(out, k):
        tx = mxopt.rmsprop(0.01, wd=1e-4, clip_weights=2.0)
        params = {"w": jnp.full((4,), 0.1 * (k + 1)), "b": jnp.ones((2,))}

        @jax.jit
        def step(p, s):
            u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
            return optax.apply_updates(p, u)
        out[k] = step(params, tx.init(params))

    results = {}
    threads = [threading.Thread(target=step_on_thread, args=(results, k)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2, 3]
    for k in range(1, 4):  # the same step from other weights: all traced fine
        np.testing.assert_array_equal(results[k]["b"], results[0]["b"])
