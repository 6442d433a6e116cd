"""The compiled train step's structure on XLA:CPU (issues 7, 14 and 17), not its speed.

An optimizer step is a memory-bound elementwise pass, so what matters is what
XLA makes of it: no parameter-sized temporary buffers (optax.rmsprop's step
allocates one), the donated params and state updated in place, and no more
passes over memory than the step's output buffers need. These are read from the
compiled executable, so they do not depend on the machine's load. Timings live
in benchmarks/bench_rmsprop.py and BENCHMARKS.md.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optimizer_list import FUSED

import mxopt

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu",
                                reason="pins down what XLA:CPU makes of the step")

# Every option on, multipliers included. Two leaves share a shape (the per-leaf
# code is traced once per shape); the scalar leaf and the bias are the odd ones.
ALL_OPTIONS = dict(wd=1e-4, rescale_grad=1 / 32, clip_gradient=1.0, clip_weights=2.0,
                   lr_mult={"*bias": 2.0, "conv": 0.5}, wd_mult={"*bias": 0.0})
SHAPES = {"conv": (64, 64, 3, 3), "fc": (512, 1000), "fc2": (512, 1000), "fc_bias": (1000,),
          "scale": ()}


def _tree(seed, dtype=jnp.float32):
    rng = np.random.RandomState(seed)
    return {k: jnp.array(rng.normal(size=s), dtype) for k, s in SHAPES.items()}


def _all_options(centered, how):
    if how == "traced":  # every hyperparameter a traced jit argument
        return optax.inject_hyperparams(
            mxopt.rmsprop, static_args=("centered", "lr_mult", "wd_mult"))(
            learning_rate=0.01, centered=centered, **ALL_OPTIONS)
    if how == "optax-schedule":
        return mxopt.rmsprop(optax.cosine_decay_schedule(0.01, 100), centered=centered,
                             **ALL_OPTIONS)
    schedule = mxopt.lr_scheduler.CosineScheduler(max_update=100, base_lr=0.01)
    return mxopt.rmsprop(schedule, centered=centered, begin_num_update=3,
                         multi_precision=how == "multi-precision",
                         skip_nonfinite=how == "skip-nonfinite", **ALL_OPTIONS)


def _compiled_step(tx, params, state, grads, **extra_args):
    # Extra update arguments are traced arguments of the step, as in training.
    def step(params, state, grads, extra_args):
        updates, state = tx.update(grads, state, params, **extra_args)
        return optax.apply_updates(params, updates), state
    return jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads, extra_args).compile()


def _nbytes(tree):
    return sum(x.nbytes for x in jax.tree.leaves(tree))


HOW = ("optax-schedule", "mxnet-schedule", "traced", "multi-precision", "skip-nonfinite")
CASES = [pytest.param(c, how, id=f"{'centered' if c else 'plain'}-{how}")
         for c in (False, True) for how in HOW]


def _trees(how):
    # multi_precision: bfloat16 params, float32 master copies in the state.
    dtype = jnp.bfloat16 if how == "multi-precision" else jnp.float32
    return _tree(0, dtype), _tree(1, dtype)


@pytest.mark.parametrize("centered, how", CASES)
def test_no_parameter_sized_temporaries(centered, how):
    params, grads = _trees(how)
    tx = _all_options(centered, how)
    compiled = _compiled_step(tx, params, tx.init(params), grads)
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp <= 0.01 * _nbytes(params), (temp, _nbytes(params))


@pytest.mark.parametrize("flag", [False, True], ids=["own-check", "given-flag"])
@pytest.mark.parametrize("centered", [False, True])
def test_no_temporaries_with_multi_precision_skip_nonfinite(centered, flag):
    # mxopt's own check sums the bfloat16 gradients as stored (inside the
    # master weights, their float32 casts would be shared with the kernel's
    # loops, and XLA:CPU would write them out first); or a flag computed
    # elsewhere replaces it.
    params, grads = _trees("multi-precision")
    schedule = mxopt.lr_scheduler.CosineScheduler(max_update=100, base_lr=0.01)
    tx = mxopt.rmsprop(schedule, centered=centered, multi_precision=True, skip_nonfinite=True,
                       **ALL_OPTIONS)
    state = tx.init(params)
    extra = dict(grads_finite=jnp.asarray(True)) if flag else {}
    compiled = _compiled_step(tx, params, state, grads, **extra)
    stats = compiled.memory_analysis()
    assert stats.temp_size_in_bytes <= 0.01 * _nbytes(params)
    assert stats.alias_size_in_bytes >= _nbytes([x for x in jax.tree.leaves((params, state))
                                                 if x.ndim])


@pytest.mark.parametrize("centered, how", CASES)
def test_donated_params_and_state_are_updated_in_place(centered, how):
    params, grads = _trees(how)
    tx = _all_options(centered, how)
    state = tx.init(params)
    compiled = _compiled_step(tx, params, state, grads)
    # Every donated array is aliased to an output, and every donated scalar but
    # skip_nonfinite's one-byte last_finite flag (XLA:CPU writes that one anew)...
    arrays = [x for x in jax.tree.leaves((params, state)) if x.ndim]
    alias = compiled.memory_analysis().alias_size_in_bytes
    slack = 1 if how == "skip-nonfinite" else 0
    assert _nbytes((params, state)) - slack <= alias <= _nbytes((params, state))
    assert alias >= _nbytes(arrays)
    # ...and at run time the outputs live in the donated buffers, which are gone.
    before = [x.unsafe_buffer_pointer() for x in arrays]
    new_params, new_state = compiled(params, state, grads, {})
    after = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((new_params, new_state)) if x.ndim]
    assert before == after
    assert all(x.is_deleted() for x in arrays)
    assert not any(x.is_deleted() for x in jax.tree.leaves(grads))


@pytest.mark.parametrize("centered, how", [c for c in CASES if "multi" not in c.id])
def test_passes_over_memory(centered, how):
    # XLA:CPU has no multi-output loop fusion by default, so each output buffer
    # is written by its own loop: plain reads w, g, n and writes n, then reads
    # w, g, n and writes w (8 array-sized reads and writes); centered writes n,
    # g_avg (3 reads and a write each), delta (5 reads and a write) and w (2
    # reads and a write): 17. The floor of the benchmark makes 6 and 12.
    params, grads = _trees(how)
    tx = _all_options(centered, how)
    compiled = _compiled_step(tx, params, tx.init(params), grads)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    passes = cost["bytes accessed"] / _nbytes(params)
    # skip_nonfinite reads the gradient once more, to sum g - g.
    extra = 1 if how == "skip-nonfinite" else 0
    assert passes <= (17 if centered else 8) + extra + 0.01, passes


def test_per_leaf_code_is_traced_once_per_signature():
    # Compile time: a model repeats a few dozen shapes over hundreds of leaves.
    from mxopt import _engine
    calls = []

    def leaf(x, y, k):
        calls.append(k)
        return x * k + y

    f = _engine.per_leaf(leaf)
    xs = [jnp.asarray(x, jnp.float32) for x in ([1, 1, 1], [2, 3, 4], [1, 2, 3, 4], [5, 6, 7])]
    outs = jax.jit(lambda xs: [f(x, x, 2.0) for x in xs] + [f(xs[0], xs[0], 0.5)])(xs)
    assert sorted(calls) == [0.5, 2.0, 2.0]  # (3,) and (4,) at 2.0; (3,) at 0.5
    for x, out in zip(xs + [xs[0]], outs):
        k = 0.5 if out is outs[-1] else 2.0
        np.testing.assert_array_equal(out, x * k + x)
    # Outside a trace it is the plain function.
    calls.clear()
    np.testing.assert_array_equal(f(xs[0], xs[0], 2.0), xs[0] * 3)
    assert calls == [2.0]


@pytest.mark.parametrize("how, op, count", [
    ("optax-schedule", " cosine(", 1),
    # An MXNet scheduler's rate is a lookup in its table, one per distinct
    # lr_mult (MXNet multiplies in float64 before the cast): 2.0, 0.5 and 1.0.
    ("mxnet-schedule", " dynamic-slice(", 3)])
def test_schedule_is_computed_once_per_step(how, op, count):
    # Compile time: XLA fuses a scalar computation into every loop reading it,
    # so each leaf's loop would compute the schedule again (5 here).
    tx = _all_options(False, how)
    params, grads = _trees(how)
    text = _compiled_step(tx, params, tx.init(params), grads).as_text()
    assert text.count(op) == count


@pytest.mark.parametrize("centered", [False, True])
def test_static_hyperparameters_reach_the_loops_as_constants(centered):
    # -clip_gradient, -clip_weights and 1 - gamma1 are computed on the host
    # (_kernels._derived): XLA does not fold scalar arithmetic on an optimization
    # barrier's result, so every loop would compute them again (and clip with a
    # max and a min rather than one clamp).
    tx = mxopt.rmsprop(0.01, centered=centered, **ALL_OPTIONS)
    params, grads = _trees("plain")
    text = _compiled_step(tx, params, tx.init(params), grads).as_text()
    on_constants = r"= f32\[\] (?:negate|subtract)\(%constant[.\d]*(?:, %constant[.\d]*)?\)"
    assert re.findall(on_constants, text) == []
    assert " clamp(" in text


# ----------------------------------------------------------------------------------
# MXNet's optimizer family (issue 17): every fused entry of tests/optimizer_list.py
# ----------------------------------------------------------------------------------

FAMILY = [e for e in FUSED if e.make is not mxopt.rmsprop]  # RMSProp: the tests above
FAMILY_SHAPES = {"w": (64, 32, 3, 3), "b": (64,)}  # the names the option sets use

# Parameter-sized temporaries allowed, in units of the params' bytes: none for
# every entry of the list. With hyperparameters traced (optax.inject_hyperparams)
# some are left, measured: a traced momentum chooses between two kernels
# elementwise, so the weight's loop recomputes the buffer's value from the old
# buffer (NAG, Signum; SGD's update is the chosen buffer itself); a traced clip
# bound of MXNet's Python-side clip is a select chain, which XLA:CPU writes to
# memory once for the loops that read the clipped gradient (AdaGrad, AdaDelta).
# See BENCHMARKS.md, issue 17.
TRACED_TEMP_BOUND = {"nag": 1.0, "signum": 1.0, "adagrad": 1.0, "adadelta": 1.0}
# Issue 18's optimizers (params' bytes; the fused entries not named here have
# none). DCASGD's new weight_previous is the old weight while the new weight
# reads the old weight_previous: each of the two loops overwrites the other's
# input, so XLA:CPU, which writes each output with its own loop, must copy one
# of them (the float32 weight: twice the bfloat16 params). SGLD keeps the few
# uint32 scalars of its key's splits (constant per leaf: 50 KB on ResNet-50).
# Before issue 18's loop-structure pass (BENCHMARKS.md): LARS 2x and LAMB 6x
# under multi_precision, LAMB 1x, Test 2x, LBSGD up to 6x, SGLD 8x, and every
# multi_precision entry with skip_nonfinite another 2x.
FAMILY_TEMP_BOUND = {
    "dcasgd-fused-wd+clips-multi_precision": 2.0,
    "dcasgd-fused-multipliers-schedule-multi_precision": 2.0,
    "dcasgd-fused-lamda-multi_precision-skip_nonfinite": 2.0,
    "sgld-fused-multi_precision": 0.02,
    "sgld-fused-wd+clips-multipliers-schedule-multi_precision-skip_nonfinite": 0.02,
    # Measured when GroupAdaGrad joined the list (issue 18): its row mean of
    # g * g, a compensated scan along each row (2x; 4x with masters and
    # skip_nonfinite). An open item, as the others were.
    "groupadagrad-fused-plain": 2.0,
    "groupadagrad-fused-rescale+clips-eps": 2.0,
    "groupadagrad-fused-multipliers-schedule": 2.0,
    "groupadagrad-fused-multi_precision-skip_nonfinite": 4.01,
}
# Test's float32 state is the new weight itself: for float32 params XLA returns
# one buffer for both outputs, so the donated state buffer is not reused.
NOT_IN_PLACE = {"test_optimizer-fused-plain"}
TRACED = [pytest.param(name, id=name) for name in
          ("sgd", "nag", "signum", "adam", "adagrad", "adadelta", "adamax", "nadam", "ftrl",
           "ftml")]


def _family_trees(low_precision, shape=tuple):
    # shape: the entry's shape for each leaf (Entry.shape: matrices for
    # GroupAdaGrad, whose w is then (64, 288) and b a (64, 1) column).
    dtype = jnp.bfloat16 if low_precision else jnp.float32
    rng = np.random.RandomState(0)
    return tuple({k: jnp.array(rng.normal(size=shape(s)), dtype)
                  for k, s in FAMILY_SHAPES.items()} for _ in range(2))


def _check_structure(tx, params, grads, temp_bound, in_place=True):
    """Compile the donated step once; check its temporaries and that every
    donated array is updated in place, at compile time and at run time."""
    state = tx.init(params)
    compiled = _compiled_step(tx, params, state, grads)
    stats = compiled.memory_analysis()
    # The slack: XLA:CPU reduces a leaf of under 4096 elements (b, for the
    # norms and skip_nonfinite's check) with loops of its own, which write the
    # summed values first: a few float32 arrays of that leaf, KiBs whatever
    # the model's size.
    limit = temp_bound * _nbytes(params) + 0.02 * _nbytes(jax.tree.map(
        lambda x: jnp.zeros(x.shape, jnp.float32), params))
    assert stats.temp_size_in_bytes <= limit, (stats.temp_size_in_bytes, _nbytes(params))
    arrays = [x for x in jax.tree.leaves((params, state)) if x.ndim]
    if not in_place:
        assert stats.alias_size_in_bytes >= _nbytes(params)
        return
    assert stats.alias_size_in_bytes >= _nbytes(arrays)
    before = [x.unsafe_buffer_pointer() for x in arrays]
    new_params, new_state = compiled(params, state, grads, {})
    after = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((new_params, new_state))
             if x.ndim]
    assert before == after
    assert all(x.is_deleted() for x in arrays)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.id) for e in FAMILY])
def test_family_step_has_no_temporaries_and_updates_in_place(entry):
    params, grads = _family_trees(entry.multi_precision, entry.shape)
    bound = FAMILY_TEMP_BOUND.get(entry.id, 0.0)
    _check_structure(entry.build(), params, grads, bound, in_place=entry.id not in NOT_IN_PLACE)


@pytest.mark.parametrize("name", TRACED)
def test_family_step_with_traced_hyperparameters(name):
    # Every float hyperparameter a jit argument (the momentum too, where there is one).
    kwargs = dict(wd=1e-4, rescale_grad=0.5, clip_gradient=0.3)
    if name != "adadelta":  # AdaDelta has no learning rate
        kwargs["learning_rate"] = 0.05
    if name in ("sgd", "nag", "signum"):
        kwargs["momentum"] = 0.9
    tx = optax.inject_hyperparams(getattr(mxopt, name))(**kwargs)
    params, grads = _family_trees(False)
    _check_structure(tx, params, grads, TRACED_TEMP_BOUND.get(name, 0.0))


def test_sgld_noise_drawn_in_its_loop_is_jax_random_normal_bit_for_bit():
    # SGLD's noise fuses into the update's loop because mxopt hashes the key
    # itself (mxopt._kernels.normal); it must be the draw the key documents.
    from mxopt import _kernels
    shapes = [(), (5,), (64, 32, 3, 3), (3, 7, 11)]
    dtypes = [jnp.float32, jnp.bfloat16, jnp.float16]
    keys = [jax.random.PRNGKey(3), jax.random.key(7), jax.random.split(jax.random.key(1))[1]]

    def draws(normal):
        return jax.jit(lambda ks: [normal(k, s, d) for k in ks for s in shapes for d in dtypes])

    want, got = draws(jax.random.normal)(keys), draws(_kernels.normal)(keys)
    eager = [_kernels.normal(keys[1], s, jnp.float32) for s in shapes]
    for x, y in zip(want + want[len(dtypes) * len(shapes):][::len(dtypes)], got + eager):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
    # Another key implementation takes jax.random.normal itself.
    rbg = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(_kernels.normal(rbg, (8,), jnp.float32),
                                  jax.random.normal(rbg, (8,), jnp.float32))
