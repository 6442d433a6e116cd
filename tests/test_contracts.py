"""The contract suite: the same checks over every optimizer path in one list.

``tests/optimizer_list.py`` holds the list (every optimizer, fused and chained,
with each option set that matters); a new optimizer joins it and gets every
check here and in ``tests/contract_sharded.py`` (8 simulated devices). The
checks are mxopt's own (leaf rules, error messages, agreement between the
paths) and JAX's and optax's contracts, kept as optax keeps them for its own
optimizers: convergence, ``inject_hyperparams``, dtypes, stable jitted steps,
abstract init, composition, float64.

The one stated exception: with ``multi_precision`` the updates of
float16/bfloat16 leaves are float32, so that each param lands exactly on its
float32 master's cast (``mxopt.master_weights``).
"""
import contextlib
import functools
import os
import re
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optimizer_list import ENTRIES, FAMILIES, FUSED

# bfloat16 params without multi_precision are part of the contracts (convergence
# in bfloat16, other entries' states); mxopt's warning about them is expected.
pytestmark = pytest.mark.filterwarnings("ignore:.*float16/bfloat16 parameter:UserWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BY_ID = {e.id: e for e in ENTRIES}
PARAMS = pytest.mark.parametrize("entry", ENTRIES, ids=[e.id for e in ENTRIES])
STEPS = 5
NAN_STEP = 2  # skip_nonfinite entries get a NaN gradient at this step


def _dtype(entry):
    # multi_precision matters for float16/bfloat16 params.
    return jnp.bfloat16 if entry.multi_precision else jnp.float32


def _params(entry, dtype=jnp.float32, seed=0, **extra):
    # The shapes the entry trains (a column b for 2-D-only optimizers).
    rng = np.random.RandomState(seed)
    tree = {"w": jnp.asarray(rng.uniform(-1, 1, entry.shape((3, 4))), dtype),
            "b": jnp.asarray(rng.uniform(-1, 1, entry.shape((4,))), dtype)}
    return {**tree, **extra}


def _grads(k, like, nan=False):
    # float0 zeros for integer and bool leaves, as jax.grad gives them.
    rng = np.random.RandomState(100 + k)
    g = {key: jnp.asarray(rng.normal(size=x.shape), x.dtype)
         if jnp.issubdtype(x.dtype, jnp.floating) else np.zeros(x.shape, jax.dtypes.float0)
         for key, x in like.items()}
    if nan:
        g["b"] = g["b"].at[1].set(jnp.nan)
    return g


def _skips(entry):
    return bool(entry.kwargs.get("skip_nonfinite"))


def _types(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


@functools.lru_cache(maxsize=None)
def _trajectory(entry_id):
    """A jitted STEPS-step run of one entry: shared by the checks below, so each
    entry's step compiles once. Its params hold integer and bool leaves next to
    the float ones, which must pass through (test_integer_and_bool_leaves...)."""
    entry = BY_ID[entry_id]
    tx = entry.build()
    params = _params(entry, _dtype(entry), steps=jnp.arange(3, dtype=jnp.int32),
                     flag=jnp.asarray(True))
    state0 = tx.init(params)

    traces = []

    @jax.jit
    def step(params, state, grads):
        # Counted per trace: jit's C++ cache (_cache_size) does not hold calls
        # with float0 arguments, and a recompile needs a new trace.
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    p, s, out = params, state0, []
    for k in range(STEPS):
        grads = _grads(k, params, nan=_skips(entry) and k == NAN_STEP)
        p_new, s, u = step(p, s, grads)
        out.append(dict(params=p_new, state=s, updates=u, grads=grads, before=p))
        p = p_new
    return dict(tx=tx, params0=params, state0=state0, steps=out, traces=len(traces))


# ----------------------------------------------------------------------------------
# Steps: dtypes, stable state, one compile, skipping, agreement between paths
# ----------------------------------------------------------------------------------

@PARAMS
def test_updates_have_the_gradients_dtype(entry):
    for rec in _trajectory(entry.id)["steps"]:
        for key in ("w", "b"):
            got, grad = rec["updates"][key].dtype, rec["grads"][key].dtype
            if entry.multi_precision and grad in (jnp.float16, jnp.bfloat16):
                assert got == jnp.float32  # the stated exception: exact landing on masters
            else:
                assert got == grad, (key, got, grad)
            assert rec["params"][key].dtype == rec["before"][key].dtype


@PARAMS
def test_jitted_steps_keep_the_state_type_and_compile_once(entry):
    run = _trajectory(entry.id)
    want = _types(run["state0"])
    for rec in run["steps"]:
        assert jax.tree.structure(rec["state"]) == jax.tree.structure(run["state0"])
        assert _types(rec["state"]) == want
    assert run["traces"] == 1


@PARAMS
def test_trains_every_float_leaf_and_skips_nonfinite_steps(entry):
    for k, rec in enumerate(_trajectory(entry.id)["steps"]):
        for key in ("w", "b"):
            moved = np.asarray(rec["params"][key] != rec["before"][key])
            if _skips(entry) and k == NAN_STEP:
                assert not moved.any(), (key, k)  # the whole step is skipped
            else:
                # Every element on the first step; later a clipped weight may
                # rest on its bound.
                assert moved.all() if k == 0 else moved.any(), (key, k)
                assert np.isfinite(np.asarray(rec["params"][key], np.float32)).all()
    if _skips(entry):
        state = _trajectory(entry.id)["steps"][-1]["state"]
        skip = [s for s in jax.tree.leaves(
            state, is_leaf=lambda x: isinstance(x, optax.ApplyIfFiniteState))
            if isinstance(s, optax.ApplyIfFiniteState)]
        assert len(skip) == 1 and int(skip[0].total_notfinite) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_and_chained_paths_agree(family):
    entries = {e.path: e for e in ENTRIES if e.family == family}
    if len(entries) < 2:
        pytest.fail(f"{family}: the list has no chain entry next to its fused one")
    fused, chain = (_trajectory(entries[p].id)["steps"] for p in ("fused", "chain"))
    for a, b in zip(fused, chain):
        for key in ("w", "b"):
            x = np.asarray(a["params"][key], np.float64)
            y = np.asarray(b["params"][key], np.float64)
            if entries["fused"].exact_paths:
                np.testing.assert_array_equal(x, y, err_msg=key)
            else:  # the documented rounding grouping of the chain
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if not _skips(e)],
                         ids=[e.id for e in ENTRIES if not _skips(e)])
def test_nonfinite_gradients_give_the_same_weights_jitted_and_eagerly(entry):
    """A NaN or infinite gradient element (no skip_nonfinite) leaves the same
    weight under jax.jit as eagerly, where MXNet's arithmetic is evaluated op by
    op: XLA must not turn a NaN into a number (Ftrl's ``NaN * (|z| > lamda1)``
    had become a select of 0, a NaN weight silently reset). Entries with
    skip_nonfinite skip such a step (test_trains_every_float_leaf...)."""
    tx = entry.build()
    params = _params(entry, _dtype(entry))
    bad = _grads(1, params)
    w, b = np.array(bad["w"], np.float32), np.array(bad["b"], np.float32)
    w.flat[[0, 5, 10]] = np.nan, np.inf, -np.inf
    b.flat[0] = np.nan
    bad = {"w": jnp.asarray(w, bad["w"].dtype), "b": jnp.asarray(b, bad["b"].dtype)}

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    runs = []
    for run in (step, jax.jit(step)):
        p, s = params, tx.init(params)
        for grads in (_grads(0, params), bad):
            p, s = run(p, s, grads)
        runs.append({k: np.asarray(x, np.float64) for k, x in p.items()})
    eager, jitted = runs
    for key in ("w", "b"):
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, atol=1e-6,
                                   equal_nan=True, err_msg=key)


# ----------------------------------------------------------------------------------
# Leaves and errors
# ----------------------------------------------------------------------------------

@PARAMS
def test_integer_and_bool_leaves_pass_through(entry):
    run = _trajectory(entry.id)  # its params hold int32 "steps" and a bool "flag"
    for path, _ in jax.tree_util.tree_flatten_with_path(run["state0"])[0]:
        name = jax.tree_util.keystr(path)
        assert "'steps'" not in name and "'flag'" not in name, name  # no state for them
    for rec in run["steps"]:
        np.testing.assert_array_equal(rec["params"]["steps"], run["params0"]["steps"])
        assert bool(rec["params"]["flag"])
        assert rec["params"]["steps"].dtype == jnp.int32
        assert rec["params"]["flag"].dtype == jnp.bool_
    new = run["steps"][0]["params"]
    assert (np.asarray(new["w"]) != np.asarray(run["params0"]["w"])).all()


@PARAMS
def test_bad_gradients_are_errors_naming_the_leaf(entry):
    tx = entry.build()
    params = _params(entry, _dtype(entry))
    state = tx.init(params)
    grads = _grads(0, params)
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(grads, state)
    bad = entry.shape((5,))
    with pytest.raises(ValueError, match=f"gradient of 'b' has shape {re.escape(str(bad))}"):
        tx.update({**grads, "b": jnp.ones(bad, grads["b"].dtype)}, state, params)
    with pytest.raises(TypeError, match=r"gradient of 'b' has dtype int32.*floating gradient"):
        tx.update({**grads, "b": grads["b"].astype(jnp.int32)}, state, params)
    with pytest.raises(ValueError, match="structure of the params"):
        tx.update({"w": grads["w"]}, state, params)


@PARAMS
def test_gradients_of_another_dtype_are_computed_in_the_params_dtype(entry):
    # optax's rule: a gradient may have another floating dtype than its param
    # (optax.MultiSteps and mixed-precision loops make them). The kernel
    # computes in the param's dtype, MXNet's only case (float32 on master
    # weights), and the update keeps the gradient's dtype.
    tx = entry.build()
    params = _params(entry, jnp.bfloat16)
    if not (entry.multi_precision or entry.low_precision_state):
        with pytest.raises(TypeError, match="multi_precision=True"):
            tx.init(params)  # float32-only state: no bfloat16 params at all
        return
    state = tx.init(params)
    grads = _grads(0, _params(entry, jnp.float32))
    updates, new = tx.update(grads, state, params)
    if entry.multi_precision:
        _, rounded = tx.update(jax.tree.map(lambda g: g.astype(jnp.bfloat16), grads), state,
                               params)
        assert updates["w"].dtype == jnp.float32
        # The float32 gradient reaches the float32 master and state as it is,
        # not rounded to bfloat16 first.
        assert any(not np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(rounded)))
    else:
        cast = jax.tree.map(lambda g: g.astype(jnp.bfloat16), grads)
        want, want_state = tx.update(cast, state, params)
        assert updates["w"].dtype == jnp.float32
        chex.assert_trees_all_equal(updates, jax.tree.map(lambda u: u.astype(jnp.float32), want))
        chex.assert_trees_all_equal(new, want_state)
    # And the other way: bfloat16 gradients of float32 params.
    params32 = _params(entry, jnp.float32)
    state32 = tx.init(params32)
    low = jax.tree.map(lambda g: g.astype(jnp.bfloat16), grads)
    updates, new = tx.update(low, state32, params32)
    want, want_state = tx.update(jax.tree.map(lambda g: g.astype(jnp.float32), low), state32,
                                 params32)
    assert updates["w"].dtype == jnp.bfloat16
    chex.assert_trees_all_equal(updates, jax.tree.map(lambda u: u.astype(jnp.bfloat16), want))
    chex.assert_trees_all_equal(new, want_state)
    # (optax.MultiSteps with such gradients: test_composes_with_multisteps...)


@PARAMS
def test_state_for_other_params_is_an_error_saying_so(entry):
    tx = entry.build()
    params = _params(entry, _dtype(entry))
    grads = _grads(0, params)
    other_shape = tx.init({**params, "b": jnp.zeros(entry.shape((5,)), params["b"].dtype)})
    with pytest.raises(ValueError, match=r"state does not match.*'b'|'b'.*state does not match"):
        tx.update(grads, other_shape, params)
    other_tree = tx.init({**params, "c": params["b"]})
    with pytest.raises(ValueError, match="state does not match"):
        tx.update(grads, other_tree, params)


def _layers(state):
    """The state's classes from the outside in (skip and master wrappers too)."""
    names = [type(state).__name__]
    while hasattr(state, "inner_state"):
        state = state.inner_state
        names.append(type(state).__name__)
    return tuple(names)


def _trains(entry, params):
    """Whether the entry's init takes these params (2-D leaves where it needs
    them, float32 state where it keeps only that)."""
    low = any(x.dtype in (jnp.float16, jnp.bfloat16) for x in jax.tree.leaves(params))
    return (all(entry.shape(x.shape) == x.shape for x in jax.tree.leaves(params))
            and not (low and not (entry.multi_precision or entry.low_precision_state)))


@pytest.mark.parametrize("entry", FUSED, ids=[e.id for e in FUSED])
def test_state_of_another_optimizer_is_an_error_naming_both(entry):
    params = _params(entry, _dtype(entry))
    tx = entry.build()
    mine = _layers(tx.init(params))
    with warnings.catch_warnings():  # other optimizers' low-precision warnings
        warnings.simplefilter("ignore", UserWarning)
        state = next(s for s in (e.build().init(params) for e in FUSED if _trains(e, params))
                     if _layers(s) != mine)
    with pytest.raises(ValueError, match="state does not match") as info:
        tx.update(_grads(0, params), state, params)
    assert "this optimizer keeps" in str(info.value)


@PARAMS
def test_complex_leaves_are_refused_by_name(entry):
    tx = entry.build()
    real = _params(entry, _dtype(entry))
    z = entry.shape((2,))
    cplx = {**real, "z": jnp.ones(z, jnp.complex64)}
    with pytest.raises(TypeError, match="'z' is complex"):
        tx.init(cplx)
    state = tx.init({**real, "z": jnp.ones(z, jnp.float32)})
    with pytest.raises(TypeError, match="'z' is complex"):
        tx.update({**_grads(0, real), "z": jnp.ones(z, jnp.complex64)}, state, cplx)


# ----------------------------------------------------------------------------------
# JAX's and optax's contracts
# ----------------------------------------------------------------------------------

@PARAMS
def test_abstract_init(entry):
    tx = entry.build()
    params = _params(entry, _dtype(entry))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    want = _types(tx.init(params))
    assert _types(tx.init(abstract)) == want
    shapes = jax.eval_shape(tx.init, abstract)
    assert jax.tree.map(lambda x: (x.shape, x.dtype), shapes) == want


def _injectable(entry):
    """The entry's numeric keyword arguments (injected), and the others (static)."""
    kwargs = {**entry.kwargs, "rescale_grad": entry.kwargs.get("rescale_grad", 1.0)}
    numeric = {k: v for k, v in kwargs.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return numeric, tuple(k for k in kwargs if k not in numeric)


@PARAMS
def test_inject_hyperparams_matches_and_does_not_recompile(entry):
    numeric, static = _injectable(entry)
    tx = optax.inject_hyperparams(entry.make, static_args=static)(**{**entry.kwargs, **numeric})
    params = _params(entry, _dtype(entry))
    state = tx.init(params)
    # inject_hyperparams injects the defaults too, and casts float
    # hyperparameters to the params' dtype: the plain form is built from the
    # values it holds.
    plain = entry.build(**{k: (int(v) if jnp.issubdtype(v.dtype, jnp.integer) else float(v))
                           for k, v in state.hyperparams.items()})

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    p, s = params, state
    q, t = params, plain.init(params)
    for k in range(3):
        grads = _grads(k, params)
        p, s = step(p, s, grads)
        u, t = plain.update(grads, t, q)
        q = optax.apply_updates(q, u)
        for key in ("w", "b"):
            x, y = np.asarray(p[key], np.float64), np.asarray(q[key], np.float64)
            if entry.jit_exact:
                np.testing.assert_array_equal(x, y, err_msg=key)
            else:  # count-derived scalars: host float64 eagerly, device under jit
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=key)
    # A new value of the same type between steps reuses the compiled step.
    s.hyperparams["rescale_grad"] = jnp.asarray(0.25, s.hyperparams["rescale_grad"].dtype)
    p2, _ = step(p, s, _grads(9, params))
    assert step._cache_size() == 1
    assert not np.array_equal(np.asarray(p2["w"], np.float32), np.asarray(p["w"], np.float32))


def _parabola(p):
    return jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum((p["b"] + 0.5) ** 2)


def _rosenbrock(p):
    return jnp.sum((1 - p["w"]) ** 2 + 100 * (p["b"] - p["w"] ** 2) ** 2)


PROBLEMS = {
    # (loss, start, optimum, steps, learning rate where the entry's is a number,
    #  option overrides that suit the problem's scale where the entry has them)
    "parabola": (_parabola, ({"w": 0.0, "b": 0.0}), {"w": 1.0, "b": -0.5}, 300, 0.05, {}),
    # Rosenbrock's gradients are in the hundreds and its valley is flat: a clip
    # bound of 0.3 or a decay of 0.01 moves or hides its minimum.
    "rosenbrock": (_rosenbrock, ({"w": -1.0, "b": 1.0}), {"w": 1.0, "b": 1.0}, 3000, 0.01,
                   dict(clip_gradient=50.0, wd=1e-4)),
}


DTYPES = ("float32", "bfloat16", "float64")


def _convergence_run(entry, problem, dtype):
    """The optimizer, start and step count of one convergence run."""
    loss, start, optimum, steps, lr, overrides = PROBLEMS[problem]
    overrides = {k: v for k, v in overrides.items() if k in entry.kwargs}
    if entry.learning_rate_arg and isinstance(entry.kwargs.get(entry.learning_rate_arg), float):
        overrides[entry.learning_rate_arg] = lr * entry.problem_lr_scale
    # The entry's own scale for the problem ("-low": bfloat16 without masters,
    # whose steps must exceed half an ulp).
    custom = dict(entry.converge.get(f"{problem}-low" if _low(entry, dtype) else problem,
                                     entry.converge.get(problem, {})))
    steps = custom.pop("steps", steps)
    tx = entry.build(**{**overrides, **custom})
    shapes = {"w": (3, 4), "b": (4,)} if problem == "parabola" else {"w": (2,), "b": (2,)}
    shapes = {k: entry.shape(s) for k, s in shapes.items()}  # elementwise losses
    return tx, {k: jnp.full(shapes[k], start[k], dtype) for k in shapes}, steps


def _low(entry, dtype):
    return dtype == "bfloat16" and not entry.multi_precision


def _refused(entry, dtype):
    # MXNet's state is float32 only: bfloat16 params without masters are refused.
    return _low(entry, dtype) and not entry.low_precision_state


@functools.lru_cache(maxsize=None)
def _converged(entry_id):
    """Every convergence run of one entry (each problem in each dtype) in one
    compiled function: the runs are independent programs, and compiling them
    together costs about a quarter less than one by one. Per (problem, dtype):
    the start, the result, and the warnings init gave (while tracing)."""
    entry = BY_ID[entry_id]
    runs = {(problem, dtype): _convergence_run(entry, problem, dtype)
            for problem in PROBLEMS for dtype in DTYPES if not _refused(entry, dtype)}
    caught = {}

    def run(key, tx, params, steps):
        loss = PROBLEMS[key[0]][0]

        def body(_, carry):
            p, s = carry
            updates, s = tx.update(jax.grad(loss)(p), s, p)
            return optax.apply_updates(p, updates), s

        # Low-precision state is allowed, with MXNet's warning (recorded here
        # and checked by the test of that run).
        with warnings.catch_warnings(record=True) if _low(entry, key[1]) else (
                contextlib.nullcontext()) as record:
            if record is not None:
                warnings.simplefilter("always")
            state = tx.init(params)
        caught[key] = [str(w.message) for w in record or ()]
        return jax.lax.fori_loop(0, steps, body, (params, state))[0]

    finals = jax.jit(lambda starts: {key: run(key, tx, starts[key], steps)
                                     for key, (tx, _, steps) in runs.items()})(
        {key: params for key, (_, params, _) in runs.items()})
    return {key: (runs[key][1], finals[key], caught[key]) for key in runs}


@PARAMS
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_converges(entry, problem, dtype):
    loss, _, optimum = PROBLEMS[problem][:3]
    low = _low(entry, dtype)
    if _refused(entry, dtype):
        tx, params, _ = _convergence_run(entry, problem, dtype)
        with pytest.raises(TypeError, match="is bfloat16.*multi_precision=True"):
            tx.init(params)  # MXNet's state is float32 only: a clear refusal
        return
    params, final, caught = _converged(entry.id)[(problem, dtype)]
    if low:
        assert any(re.search("multi_precision=True", m) for m in caught), caught
    shapes = list(params)
    if entry.ascends:  # MXNet's Test adds the gradient: it climbs, finitely
        assert all(np.isfinite(np.asarray(final[k], np.float32)).all() for k in shapes)
        assert float(loss(final)) > float(loss(params))
        return
    if low and entry.low_precision_bound is None:  # trains, finitely, without converging
        assert all(np.isfinite(np.asarray(final[k], np.float32)).all() for k in shapes)
        assert float(loss(final)) < float(loss(params))
        return
    for k in shapes:
        assert final[k].dtype == jnp.dtype(dtype)
        err = np.max(np.abs(np.asarray(final[k], np.float64) - optimum[k]))
        assert err < (entry.low_precision_bound if low else 0.1), (k, err)
    assert float(loss(final)) < (0.1 if low else 0.02) * float(loss(params))


def _multisteps(tx, params, grads):
    """Steps of ``optax.MultiSteps(tx, every_k_schedule=2)``, one compiled update
    for all of them (a jit made once, not per step: a new jax.jit of the bound
    method recompiles): the final params and each step's updates."""
    multi = optax.MultiSteps(tx, every_k_schedule=2)
    update = jax.jit(multi.update)
    p, state, out = params, multi.init(params), []
    for g in grads:
        updates, state = update(g, state, p)
        p = optax.apply_updates(p, updates)
        out.append(updates)
    assert update._cache_size() == 1  # MultiSteps' state keeps its type
    return p, out


@PARAMS
def test_composes_with_multisteps_and_extra_args(entry):
    params = _params(entry, _dtype(entry))
    p, _ = _multisteps(entry.build(), params, [_grads(k, params) for k in range(4)])
    assert (np.asarray(p["w"]) != np.asarray(params["w"])).all()
    # optax.MultiSteps returns zeros of the gradients' dtype between emissions:
    # both branches must agree with gradients of another dtype than the params
    # (bfloat16 for float32).
    params32 = _params(entry, jnp.float32)
    _, mixed = _multisteps(entry.build(), params32, [
        jax.tree.map(lambda g: g.astype(jnp.bfloat16), _grads(k, params32)) for k in range(2)])
    assert [u["w"].dtype for u in mixed] == [jnp.bfloat16] * 2
    assert not np.asarray(mixed[0]["w"], np.float32).any()  # between emissions: zeros
    assert np.asarray(mixed[1]["w"], np.float32).any()
    # optax.chain hands every member the extra arguments of update (value=).
    chained = optax.chain(entry.build(), optax.contrib.reduce_on_plateau(patience=1))
    updates, _ = jax.jit(chained.update)(_grads(0, params), chained.init(params), params,
                                         value=jnp.asarray(1.0))
    assert jax.tree.structure(updates) == jax.tree.structure(params)


# ----------------------------------------------------------------------------------
# 8 devices: Auto and Explicit meshes (a subprocess, so no other test sees them)
# ----------------------------------------------------------------------------------

def test_sharded_contracts_on_eight_devices():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "contract_sharded.py")],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # Each entry reports once per mesh kind, so a check cannot be skipped silently.
    for e in ENTRIES:
        for mesh in ("auto", "explicit"):
            assert f"ok {mesh} {e.id}\n" in proc.stdout, (mesh, e.id)
