"""The composable pieces, and property tests of mxopt.rmsprop against the reference."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mxopt
from mxopt import reference
from mxopt._mxnumbers import received_float

RTOL, ATOL = 1e-5, 1e-6


def _apply(tx, grads, params, state=None):
    state = tx.init(params) if state is None else state
    updates, state = tx.update(grads, state, params)
    return updates, state


def test_rescale_and_decay_in_mxnet_order():
    w = jnp.asarray([1.0, -2.0, 3.0], jnp.float32)
    g = jnp.asarray([10.0, 10.0, -10.0], jnp.float32)
    tx = optax.chain(mxopt.rescale_gradient(0.5), mxopt.add_weight_decay(0.1),
                     mxopt.clip_gradient(4.9))
    updates, _ = _apply(tx, g, w)
    # 0.5 * g + 0.1 * w = [5.1, 4.8, -4.7]; the decay term is clipped with the gradient.
    np.testing.assert_allclose(updates, [4.9, 4.8, -4.7], rtol=1e-6)


@pytest.mark.parametrize("bound", [None, 0, 0.0])
def test_clip_gradient_off_values(bound):
    g = jnp.asarray([100.0, -100.0])
    updates, _ = _apply(mxopt.clip_gradient(bound), g, g)
    chex.assert_trees_all_equal(updates, g)


def test_clip_gradient_passes_nan():
    updates, _ = _apply(mxopt.clip_gradient(1.0), jnp.asarray([jnp.nan, 3.0]), jnp.zeros(2))
    assert np.isnan(updates[0]) and updates[1] == 1.0


@pytest.mark.parametrize("centered", [False, True])
def test_pieces_follow_the_reference_state(centered):
    rng = np.random.RandomState(0)
    w = rng.normal(size=10).astype(np.float32)
    g = rng.normal(size=10).astype(np.float32)
    scale = mxopt.scale_by_centered_rms(0.8, 1e-4) if centered else mxopt.scale_by_rms(0.8, 1e-4)
    _, state = _apply(scale, jnp.asarray(g), jnp.asarray(w))
    if centered:
        _, n, g_avg, _ = reference.rmspropalex_update(w, g, *(np.zeros_like(w),) * 3, lr=0.1,
                                                      gamma1=0.8, epsilon=1e-4)
        np.testing.assert_array_equal(state.g_avg, g_avg)
    else:
        _, n = reference.rmsprop_update(w, g, np.zeros_like(w), lr=0.1, gamma1=0.8, epsilon=1e-4)
    np.testing.assert_array_equal(state.n, n)


def test_graves_momentum_keeps_lr_inside_the_buffer():
    # delta_2 = gamma2 * (-lr_1 u) - lr_2 u: the old step keeps its own rate.
    lrs = iter([1.0, 0.1])
    tx = mxopt.graves_momentum(lambda count: jnp.where(count == 0, 1.0, 0.1), gamma2=0.5)
    u = jnp.ones(2)
    state = tx.init(u)
    d1, state = tx.update(u, state)
    d2, state = tx.update(u, state)
    np.testing.assert_allclose(d1, -next(lrs))
    np.testing.assert_allclose(d2, 0.5 * -1.0 - 0.1, rtol=1e-6)
    assert isinstance(state, mxopt.GravesMomentumState) and int(state.count) == 2


def test_pieces_need_params_where_mxnet_reads_the_weight():
    for tx in (mxopt.add_weight_decay(0.1), mxopt.clip_weights(1.0)):
        with pytest.raises(ValueError, match="params"):
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_state_is_a_named_tuple_of_param_shaped_leaves():
    params = {"a": jnp.ones((2, 3)), "b": (jnp.ones(4), jnp.ones(()))}
    state = mxopt.rmsprop(centered=True).init(params)
    assert isinstance(state, mxopt.CenteredRMSPropState)
    for buf in (state.n, state.g_avg, state.delta):
        chex.assert_trees_all_equal_shapes(buf, params)


def test_structure_mismatch_is_an_error():
    tx = mxopt.rmsprop()
    state = tx.init({"a": jnp.ones(2)})
    with pytest.raises(ValueError):
        tx.update({"b": jnp.ones(2)}, state, {"a": jnp.ones(2)})


# ---- weight clipping holds exactly -----------------------------------------

FLOAT_DTYPES = [np.float16, np.float32, np.float64, jnp.bfloat16]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(FLOAT_DTYPES),
       bound=st.floats(1e-3, 1e3),
       weights=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=40),
       updates=st.lists(st.floats(-1e4, 1e4), min_size=40, max_size=40))
@example(dtype=np.float64, bound=1.668653802957957, weights=[0.0], updates=[2.0] * 40)
def test_clip_weights_bound_holds_after_apply_updates(dtype, bound, weights, updates):
    w = jnp.asarray(np.asarray(weights), dtype)
    u = jnp.asarray(np.asarray(updates[: len(weights)]), dtype)
    # The bound as MXNet's kernel parses it (dmlc::stof, not always correctly
    # rounded: 1.668653802957957 is one float32 ulp below np.float32's).
    b = jnp.asarray(np.float32(received_float(bound))).astype(dtype)
    tx = mxopt.clip_weights(bound)
    out, _ = tx.update(u, tx.init(w), w)
    new = optax.apply_updates(w, out)
    assert new.dtype == w.dtype
    assert bool(jnp.all((new <= b) & (new >= -b))), (w, u, new, b)
    # Inside the interval the update is untouched, so the weight is exactly w + u.
    plain = optax.apply_updates(w, u)
    inside = (plain <= b) & (plain >= -b)
    assert bool(jnp.all(jnp.where(inside, new == plain, True)))
    # Where clipped, within an ulp of the clipped value at the scale of the old
    # weight (the finest step w + u can take).
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    err = jnp.abs(f32(new) - f32(jnp.clip(plain, -b, b)))
    scale = jnp.maximum(jnp.abs(f32(w)), f32(b))
    assert bool(jnp.all(err <= 2 * float(jnp.finfo(dtype).eps) * scale)), (w, u, new, b)


def test_clip_weights_adversarial_rounding():
    # 0.5 + (0.2 - 0.5) rounds to just below 0.2 in float32; far weights make
    # w + (b - w) overshoot. The bound must still hold.
    w = jnp.asarray([0.5, -0.5, 3.0, -40.0, 1e6, -1e6, 0.7, 1.3e-5], jnp.float32)
    u = jnp.asarray([10.0, -10.0, 7.0, 90.0, -3e6, 3e6, -1.4, 5.0], jnp.float32)
    for bound in (0.2, 0.1, 1e-3, 0.3333333):
        tx = mxopt.clip_weights(bound)
        new = optax.apply_updates(w, tx.update(u, None, w)[0])
        b = jnp.float32(bound)
        assert bool(jnp.all(jnp.abs(new) <= b)), (bound, new)

@pytest.mark.parametrize("dtype,bound", [(np.float16, 1e-5), (np.float16, 6e4),
                                         (np.float32, 1e-40), (np.float32, 3e38),
                                         (jnp.bfloat16, 1e-39)])
def test_clip_weights_extreme_bounds(dtype, bound):
    # Subnormal and near-overflow bounds: the correction stays finite and inside.
    b = jnp.asarray(np.float32(bound)).astype(dtype)
    # Far outside for the tiny bounds; inside, with overflowing steps, for the huge.
    scale = 1e3 if bound < 1 else 0.25
    w = jnp.asarray([0.0, 0.3, -0.7, 2.5, -3.0, 1.0, -1.0], dtype) * (b * scale)
    u = jnp.asarray([1.0, -1.0, 3.0, -5.0, 0.1, -2e3, 7e2], dtype) * b
    for update in (mxopt.clip_weights(bound).update, jax.jit(mxopt.clip_weights(bound).update)):
        new = optax.apply_updates(w, update(u, None, w)[0])
        assert bool(jnp.all(jnp.isfinite(new))), (dtype, bound, new)
        assert bool(jnp.all(jnp.abs(new) <= b)), (dtype, bound, new)



_CLIP_UPDATE = jax.jit(lambda w, u, bound: mxopt.clip_weights(bound).update(u, None, w)[0])


def _check_clip_contract(w, u, bound, dtype):
    """clip_weights' contract (README, "Numerics") for a traced ``bound`` (taken
    as float32, then the weights' dtype): the new weight never leaves
    [-b, b]; where ``w + u`` stays inside (or is NaN) the update is ``u``
    itself; where it is clipped, the new weight is within an ulp of the bound at
    the scale of the old weight (2 eps max(|w|, b)), unless ``b - w`` overflows."""
    b = np.float32(bound).astype(dtype)
    out = _CLIP_UPDATE(jnp.asarray(w), jnp.asarray(u), jnp.float32(bound))
    new = np.asarray(optax.apply_updates(jnp.asarray(w), out), np.float64)
    plain = np.asarray(optax.apply_updates(jnp.asarray(w), jnp.asarray(u)), np.float64)
    w64, b64, out = np.asarray(w, np.float64), float(b), np.asarray(out)
    outside = np.abs(plain) > b64
    assert not np.any(np.abs(new) > b64), (dtype, bound, w[np.abs(new) > b64][:4])
    kept = ~outside
    assert np.array_equal(out[kept], np.asarray(u)[kept], equal_nan=True), (dtype, bound)
    finite = np.abs(w64) + b64 <= float(jnp.finfo(dtype).max)  # b - w does not overflow
    err = np.abs(new - np.clip(plain, -b64, b64))[outside & finite]
    scale = np.maximum(np.abs(w64), b64)[outside & finite]
    assert np.all(err <= 2 * float(jnp.finfo(dtype).eps) * scale), (dtype, bound, err.max())


def test_clip_weights_contract_every_float16_weight():
    # Where w + u is clipped, the update depends only on w, the bound and the
    # side w + u left on, so every finite float16 weight against both sides
    # (u = +-inf) covers the nudge exhaustively for these bounds: every 16th
    # float16 in [1, 2), one per binade from the smallest normal to 2**14, and
    # subnormal ones. u = NaN and u = -w (inside) check the untouched branch.
    w = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    w = w[np.isfinite(w)]
    ones = np.ones_like(w)
    ws = np.concatenate([w, w, w, w])
    us = np.concatenate([np.inf * ones, -np.inf * ones, np.nan * ones, -w])
    in_binade = np.arange(1024, step=16, dtype=np.uint16) + np.float16(1).view(np.uint16)
    bounds = [*in_binade.view(np.float16), *(2.0 ** np.arange(-14, 15)) * 1.3,
              2.0 ** -20, 2.0 ** -24, 65504.0]
    for bound in bounds:
        _check_clip_contract(ws, us, float(bound), np.float16)


def test_clip_weights_contract_random_float32():
    rng = np.random.default_rng(0)
    n = 1 << 16
    w = (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-40, 38, n)).astype(np.float32)
    for bound in 10.0 ** rng.uniform(-30, 30, 12):
        u_near = (rng.choice([-1.0, 1.0], n) * bound * (1 + rng.exponential(1e-3, n))
                  - w).astype(np.float32)  # lands just outside, after rounding or not
        for u in (u_near, np.float32(np.inf) * np.sign(u_near),
                  (rng.standard_normal(n) * bound * 3).astype(np.float32)):
            _check_clip_contract(w, u, float(np.float32(bound)), np.float32)


@pytest.mark.parametrize("dtype,bounds", [
    # 7.9: just under the end where float16's b - w could overflow
    (np.float16, (1e-5, 0.3333, 2.0, 7.9)),
    (np.float32, (1e-29, 0.3333333, 2.0, 1e30)),
    (np.float64, (1e-37, 0.3333333, 2.0, 1e38)),  # MXNet parses bounds as float32
])
def test_clip_weights_float_step_is_the_bit_step(dtype, bounds):
    # A static bound in range steps an overshooting correction by float
    # arithmetic (fewer operations to compile); a traced bound keeps the bit
    # step. They must agree bit for bit, NaN and infinities included, on every
    # float16 weight and on weights of every float32/float64 magnitude, with
    # updates that land just outside, far outside, inside, or are not finite.
    rng = np.random.default_rng(1)
    if dtype == np.float16:
        w = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    else:
        info = np.finfo(dtype)
        w = (rng.choice([-1.0, 1.0], 1 << 16)
             * 10.0 ** rng.uniform(np.log10(info.tiny), np.log10(info.max), 1 << 16)).astype(dtype)
    ints = {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    for bound in bounds:
        received = reference.kernel_float(bound)  # the static bound as parsed: traced alike
        b = float(received.astype(dtype))
        with np.errstate(over="ignore", invalid="ignore"):
            near = (rng.choice([-1.0, 1.0], w.size) * b * (1 + rng.exponential(1e-3, w.size))
                    - w.astype(np.float64)).astype(dtype)
        for u in (near, np.full_like(w, np.inf), np.full_like(w, -np.inf),
                  (rng.standard_normal(w.size) * 3 * b).astype(dtype), np.full_like(w, np.nan)):
            static = jax.jit(lambda w, u, bound=bound: mxopt.clip_weights(bound).update(
                u, None, w)[0])(jnp.asarray(w), jnp.asarray(u))
            bit = _CLIP_UPDATE(jnp.asarray(w), jnp.asarray(u), jnp.float32(received))
            same = np.asarray(static).view(ints) == np.asarray(bit).view(ints)
            assert same.all(), (dtype, bound, w[~same][:3], u[~same][:3])


# ---- property tests against the reference ----------------------------------

def _zero_or_normal(hi):
    # 0, or a number well above float32's smallest normal: XLA:CPU flushes
    # subnormals to zero, where MXNet and the NumPy twin keep them (README,
    # "Numerics"), so a subnormal epsilon (1e-45, or 1.1754943508222875e-38,
    # which dmlc::stof parses just below the smallest normal) is 0 here and,
    # say, 3.7e-23 under MXNet's root.
    return st.one_of(st.just(0.0), st.floats(1e-30, hi))


hyper = st.fixed_dictionaries(dict(
    learning_rate=_zero_or_normal(0.5),
    gamma1=_zero_or_normal(0.999),
    gamma2=_zero_or_normal(0.999),
    epsilon=_zero_or_normal(1e-2),
    wd=_zero_or_normal(0.5),
    rescale_grad=st.floats(1e-3, 10.0),
    clip_gradient=st.one_of(st.none(), st.just(0.0), st.floats(1e-2, 10.0)),
    clip_weights=st.one_of(st.none(), st.just(0.0), st.floats(1e-1, 10.0)),
    centered=st.booleans(),
))
shapes = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=3)


def _reference_steps(hp, weights, grads_seq):
    weights = [w.copy() for w in weights]
    states = [[np.zeros_like(w)] * (3 if hp["centered"] else 1) for w in weights]
    kw = dict(lr=hp["learning_rate"], gamma1=hp["gamma1"], epsilon=hp["epsilon"], wd=hp["wd"],
              rescale_grad=hp["rescale_grad"], clip_gradient=hp["clip_gradient"],
              clip_weights=hp["clip_weights"])
    for grads in grads_seq:
        for i, (w, g) in enumerate(zip(weights, grads)):
            if hp["centered"]:
                weights[i], *states[i] = reference.rmspropalex_update(
                    w, g, *states[i], gamma2=hp["gamma2"], **kw)
            else:
                weights[i], *states[i] = reference.rmsprop_update(w, g, *states[i], **kw)
    return weights


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hp=hyper, shape_list=shapes, seed=st.integers(0, 2**31 - 1), jit=st.booleans())
@example(hp=dict(learning_rate=0.5, gamma1=0.0, gamma2=0.5, epsilon=0.0, wd=0.0,
                 rescale_grad=1.0, clip_gradient=None, clip_weights=1.0, centered=True),
         shape_list=[[], []], seed=0, jit=False)
def test_rmsprop_matches_reference(hp, shape_list, seed, jit):
    rng = np.random.RandomState(seed)
    weights = [rng.normal(size=s).astype(np.float32) for s in shape_list]
    grads_seq = [[(rng.normal(size=s) * 3).astype(np.float32) for s in shape_list]
                 for _ in range(4)]
    tx = mxopt.rmsprop(**hp)
    params = [jnp.asarray(w) for w in weights]
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for grads in grads_seq:
        updates, state = update([jnp.asarray(g) for g in grads], state, params)
        params = optax.apply_updates(params, updates)
    expected = _reference_steps(hp, weights, grads_seq)
    for got, want in zip(params, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        if not hp["clip_weights"] and jax.default_backend() == "cpu":
            # The FMA guard turns a product of -inf into the lowest float
            # (README, "Numerics"), which shows only where MXNet's weight is NaN:
            # there mxopt's is non-finite too.
            got = np.asarray(got)
            nan = np.isnan(want)
            assert not np.isfinite(got[nan]).any()
            np.testing.assert_array_equal(got[~nan], want[~nan])
        else:
            # Clipped weights land within an ulp of MXNet's each step, and the
            # next steps can amplify that (epsilon near 0, tiny n). Where
            # MXNet's weight is NaN (0/0 with epsilon 0), the FMA guard's lowest
            # float can be clipped: mxopt's weight is then the bound (below).
            got = np.asarray(got)
            nan = np.isnan(want)
            np.testing.assert_allclose(got[~nan], want[~nan], rtol=1e-4, atol=1e-5)
        if hp["clip_weights"]:  # NaN stays NaN; nothing lands outside the bound
            # The bound MXNet's kernel receives: dmlc::stof of str(bound).
            assert not np.any(np.abs(np.asarray(got)) > received_float(hp["clip_weights"]))
