"""The tree machinery under every mxopt optimizer, fused or composed.

:mod:`mxopt._kernels` computes one leaf; this module does everything that
involves the tree, once, for every optimizer and for both paths (the fused
aliases of :mod:`mxopt.alias` and the composable pieces of
:mod:`mxopt.transforms`):

* which leaves train (floating ones), which pass through untouched and keep no
  state (integer and bool ones), and which are refused (complex ones: MXNet has
  no complex dtype, and a leaf that silently never trains is worse than an error);
* checks that name the leaf: gradients against params, state against params
  and against the optimizer that is meant to use it;
* zero state that follows each param's sharding, also for abstract params
  (``jax.ShapeDtypeStruct``), and the update count, made in ``init``;
* learning rates (floats, JAX scalars, optax schedules, MXNet schedulers) and
  per-leaf multipliers;
* the per-leaf function traced once per distinct leaf signature (compile time);
* skipping non-finite steps (``skip_nonfinite``), weight clipping, and float32
  master weights (``multi_precision``).

:func:`fused` turns a kernel and its state's field names into an
``optax.GradientTransformationExtraArgs``; an optimizer is a kernel plus one
call of it.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mxopt import _kernels as K
from mxopt import _validation as v
from mxopt import lr_scheduler, multipliers

__all__ = [
    "ScalarOrSchedule", "LOW_PRECISION_DTYPES", "MasterWeightsState", "Carry", "Optimizer",
    "needs_params", "leaf_kind", "is_float", "zeros_like_sharded", "zeros_for_float_leaves",
    "warn_low_precision", "refuse_low_precision",
    "check_params", "check_grads_match_params", "check_state",
    "initial_count", "scale_by_multipliers", "learning_rates", "per_leaf", "map_leaves",
    "all_finite", "finiteness_flag", "skip_state", "skip_nonfinite", "master_weights", "fused",
    "checked_chain",
]

ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]
LOW_PRECISION_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def needs_params(who: str) -> ValueError:
    """The error for an ``update`` called without the params."""
    return ValueError(f"{who} needs the params (weight decay and weight clipping read "
                      f"them): call tx.update(grads, state, params)")


# ----------------------------------------------------------------------------------
# Leaves: which train, which pass through, which are refused
# ----------------------------------------------------------------------------------

def _dtype(x: Any):
    return jnp.dtype(x.dtype) if hasattr(x, "dtype") else jnp.result_type(x)


def leaf_kind(x: Any) -> str:
    """``"float"`` (trained), ``"complex"`` (refused) or ``"other"`` (integer,
    bool: passed through with no state)."""
    dtype = _dtype(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return "complex"
    return "float" if jnp.issubdtype(dtype, jnp.floating) else "other"


def is_float(x: Any) -> bool:
    return leaf_kind(x) == "float"


def _named(tree: Any):
    paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [multipliers.leaf_name(p) for p, _ in paths], [x for _, x in paths], treedef


def _refuse_complex(who: str, name: str, x: Any) -> None:
    raise TypeError(f"{who}: the leaf {name!r} is complex ({_dtype(x)}). MXNet's optimizers "
                    f"have no complex arithmetic, and mxopt does not guess one: train its "
                    f"real and imaginary parts as two real leaves, or keep it out of this "
                    f"optimizer (optax.masked / optax.multi_transform)")


def check_params(params: Any, who: str) -> None:
    """Refuse complex leaves of ``params``, naming the first."""
    names, leaves, _ = _named(params)
    for name, x in zip(names, leaves):
        if leaf_kind(x) == "complex":
            _refuse_complex(who, name, x)


def warn_low_precision(params: Any, who: str) -> None:
    """Warn once, as MXNet's ``create_state_multi_precision`` does, when state will
    accumulate in float16/bfloat16."""
    low = [x for x in jax.tree.leaves(params) if _dtype(x) in LOW_PRECISION_DTYPES]
    if low:
        warnings.warn(f"{who}: {len(low)} float16/bfloat16 parameter(s): accumulating with "
                      "float16/bfloat16 in the optimizer can lead to poor accuracy or slow "
                      "convergence. Consider multi_precision=True (float32 master weights).",
                      UserWarning, stacklevel=v.caller_stacklevel())


def refuse_low_precision(params: Any, who: str) -> None:
    """Refuse float16/bfloat16 params, naming the first, for an optimizer whose
    MXNet state is float32 only."""
    names, leaves, _ = _named(params)
    for name, x in zip(names, leaves):
        if _dtype(x) in LOW_PRECISION_DTYPES:
            raise TypeError(f"{who}: the leaf {name!r} is {_dtype(x)}, and MXNet keeps this "
                            f"optimizer's state in float32 only (it refuses float16 weights "
                            f"without multi_precision): pass multi_precision=True for float32 "
                            f"master weights, or train the leaf in float32")


def check_grads_match_params(updates: Any, params: Any, who: str):
    """Leaf names and the params' treedef, after checking that ``updates`` has the
    params' structure and each floating leaf its param's shape and a floating
    dtype. A gradient's dtype may differ from its param's, as optax allows:
    the kernel computes in the param's dtype (float32 for float16/bfloat16
    params under master weights), MXNet's only case, and the update is
    returned in the gradient's dtype (:func:`in_param_dtype`)."""
    names, leaves, treedef = _named(params)
    try:
        grads = treedef.flatten_up_to(updates)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{who}: the gradients do not have the structure of the params: "
                         f"{e}") from None
    for name, w, g in zip(names, leaves, grads):
        kind = leaf_kind(w)
        if kind == "complex" or leaf_kind(g) == "complex":
            _refuse_complex(who, name, w if kind == "complex" else g)
        if kind != "float":
            continue
        if jnp.shape(g) != jnp.shape(w):
            raise ValueError(f"{who}: the gradient of {name!r} has shape {jnp.shape(g)}, "
                             f"its param has shape {jnp.shape(w)}")
        if leaf_kind(g) != "float":
            raise TypeError(f"{who}: the gradient of {name!r} has dtype {_dtype(g)}, its "
                            f"param has dtype {_dtype(w)}; a floating param needs a floating "
                            f"gradient (cast it to {_dtype(w)})")
    return names, treedef


def in_param_dtype(g: Any, w: Any) -> Tuple[Any, Callable[[Any], Any]]:
    """``g`` cast to its param's dtype, which MXNet's kernels compute in, and the
    function that casts an update back to ``g``'s dtype (optax's rule: updates
    keep the gradients' dtype). Both are the identity when the dtypes agree,
    the only case MXNet has, so MXNet's numerics are untouched there."""
    if _dtype(g) == _dtype(w):
        return g, lambda u: u
    return g.astype(_dtype(w)), lambda u: u.astype(_dtype(g))


# ----------------------------------------------------------------------------------
# State: zeros that follow the params, the count, and checks against the params
# ----------------------------------------------------------------------------------

def zeros_like_sharded(p: Any) -> jax.Array:
    """Zeros with ``p``'s shape, dtype and sharding.

    ``jnp.zeros_like`` of a traced param is a constant, which GSPMD leaves
    unsharded: ``jax.jit(tx.init)`` would put all the state on one device. This
    elementwise expression is exactly +0 for every value of ``p`` (NaN and inf
    included) yet depends on ``p``, so the state takes ``p``'s sharding. An
    abstract param (``jax.ShapeDtypeStruct``) has no values: its zeros are made
    from its shape, dtype and sharding.
    """
    if isinstance(p, jax.ShapeDtypeStruct):
        return jnp.zeros_like(p)
    m = K.nan_or_zero(p)
    return jnp.where(m == m, m, jnp.zeros((), p.dtype))


def zeros_for_float_leaves(params: Any) -> Any:
    """Zeros like each floating leaf (sharded like it); ``optax.MaskedNode()`` for
    integer/bool leaves, which optimizers leave untouched and keep no state for."""
    return jax.tree.map(lambda p: zeros_like_sharded(p) if is_float(p) else optax.MaskedNode(),
                        params)


def initial_count(begin_num_update: Any) -> jax.Array:
    """The update count of a fresh state: MXNet's ``num_update`` starts at
    ``begin_num_update``. An int32 scalar, made in ``init`` (not when the
    optimizer is built), so that every state an optimizer returns has the
    type and sharding ``init`` gave it."""
    # optax.inject_hyperparams hands every int argument over as an array.
    if (isinstance(begin_num_update, (jax.Array, np.ndarray)) and begin_num_update.ndim == 0
            and jnp.issubdtype(begin_num_update.dtype, jnp.integer)):
        if v.is_traced(begin_num_update):
            return begin_num_update.astype(jnp.int32)
        begin_num_update = int(begin_num_update)
    v.check_begin_num_update(begin_num_update, int32=True)
    return jnp.asarray(begin_num_update, jnp.int32)


def _made_by(state: Any) -> str:
    maker = _STATE_MAKERS.get(type(state))
    return f"{type(state).__name__} (made by {maker})" if maker else type(state).__name__


_STATE_MAKERS: dict = {}


def check_state(state: Any, state_cls: type, who: str) -> None:
    """Raise a ValueError saying that ``state`` is not the state this optimizer
    (``who``) makes, and what differs, unless it is a ``state_cls``."""
    if not isinstance(state, state_cls):
        raise ValueError(f"{who}: the optimizer state does not match: this optimizer keeps "
                         f"{state_cls.__name__}, got {_made_by(state)}. Build the state with "
                         f"this optimizer's init (or the optimizer that made it)")


def _check_buffer(buffer: Any, field: str, names, params_leaves, treedef, who: str,
                  has_entry: Callable[[Any], bool] = None, make: Callable = None):
    """The leaves of a state field, after checking that it has the params' tree
    structure and, for each param with an entry (``has_entry``, by default the
    floating ones), an entry of the param's shape (or, given ``make``, the
    shape ``make`` gives a fresh entry of that param)."""
    has_entry = has_entry or is_float
    try:
        leaves = treedef.flatten_up_to(buffer)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{who}: the optimizer state does not match the params: "
                         f"{_field(field)} has another tree structure ({e}). Was it made for "
                         f"another params tree? Build it with tx.init(params)") from None
    for name, w, s in zip(names, params_leaves, leaves):
        if has_entry(w):
            if make is None:
                _check_entry(s, w, name, who, field=field)
            else:
                _check_made_entry(s, w, make, name, who, field)
    return leaves


def _check_made_entry(entry: Any, w: Any, make: Callable, name: str, who: str,
                      field: str) -> None:
    want = jax.eval_shape(make, jax.ShapeDtypeStruct(jnp.shape(w), _dtype(w)))
    if isinstance(entry, optax.MaskedNode) or jnp.shape(entry) != want.shape:
        got = "no entry" if isinstance(entry, optax.MaskedNode) else f"shape {jnp.shape(entry)}"
        raise ValueError(f"{who}: the optimizer state does not match the params: "
                         f"{_field(field)} has {got} for {name!r}, whose param of shape "
                         f"{jnp.shape(w)} needs shape {want.shape}. Build the state with "
                         f"tx.init(params)")


def _field(field: str) -> str:
    return f"state.{field}" if field else "the state"


def _carry_dtype():
    # MXNet's carried scalars are Python floats (float64); float32 without x64.
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _fresh_carry(init: Any) -> jax.Array:
    """A carry's value in a fresh state: a Python float as MXNet's float64 (float32
    without x64), any array (a PRNG key, an integer counter) as it is."""
    if isinstance(init, float):
        return jnp.asarray(init, _carry_dtype())
    value = jnp.asarray(init)
    if value.ndim == 0:
        return value
    # x * 1 is x, but a computed array: on a mesh with Explicit axes a constant
    # is typed P() and the carry a step computes P(None, ...), which are the
    # same sharding spelled differently, and the jitted step would compile
    # twice (once per spelling).
    return value * jnp.ones(value.shape, value.dtype)


def _check_carry(value: Any, init: Any, field: str, who: str) -> jax.Array:
    fresh = jax.eval_shape(_fresh_carry, init)
    if jnp.shape(value) != fresh.shape or _dtype(value) != fresh.dtype:
        raise ValueError(f"{who}: the optimizer state does not match: state.{field} must be "
                         f"{fresh.dtype}{list(fresh.shape)}, got "
                         f"{_dtype(value)}{list(jnp.shape(value))}. Build the state with "
                         f"tx.init(params)")
    return jnp.asarray(value)


def _check_count(count: Any, who: str) -> None:
    if jnp.shape(count) != () or not jnp.issubdtype(_dtype(count), jnp.integer):
        raise ValueError(f"{who}: the optimizer state does not match: its count must be an "
                         f"integer scalar, got {_dtype(count)}{list(jnp.shape(count))}")


# ----------------------------------------------------------------------------------
# Learning rates and multipliers
# ----------------------------------------------------------------------------------

def scale_by_multipliers(value: Any, spec: Any, params: Any, argname: str) -> Any:
    """``value * multiplier`` per leaf. MXNet multiplies Python floats (float64)
    and then rounds to float32: a static value is multiplied the same way here;
    a traced one (a schedule, an injected hyperparameter) in its own dtype."""
    mults = multipliers.resolve(spec, params, argname)
    if mults is None:
        return jax.tree.map(lambda _: value, params)

    def scaled(m):
        if m == 1.0:
            return value
        if not v.is_traced(value) and not callable(value):
            return float(np.asarray(value)) * m
        return value * m

    return jax.tree.map(scaled, mults)


def learning_rates(learning_rate: ScalarOrSchedule, count: jax.Array, lr_mult: Any,
                   tree: Any, *, before_count: bool = False) -> Any:
    """Per-leaf learning rates of the update that follows ``count`` updates.

    An :mod:`mxopt.lr_scheduler` scheduler follows MXNet, which increments
    ``num_update`` before reading the rate: ``scheduler(count + 1)``, with the
    product ``rate * lr_mult`` taken in float64 on the host, as MXNet does,
    before the float32 cast. Any other schedule follows optax:
    ``schedule(count)``.

    ``before_count``: the rate an MXNet optimizer reads *before* it counts
    (LBSGD's first parameter of a step): ``scheduler(count) * lr_mult``. Only
    MXNet schedulers are affected; their argument is MXNet's ``num_update``.
    """
    if isinstance(learning_rate, lr_scheduler.LRScheduler):
        if not v.is_traced(count):
            # A Python int: the scheduler computes in float64 on the host, as
            # MXNet's does, rather than reading its float32 table.
            count = int(count)
        mults = multipliers.resolve(lr_mult, tree, "lr_mult")
        if before_count:
            rate = _computed_once(learning_rate(count))
            if mults is None:
                return jax.tree.map(lambda _: rate, tree)
            return jax.tree.map(lambda m: rate if m == 1.0 else rate * m, mults)
        if mults is None:
            rate = _computed_once(learning_rate(count + 1))
            return jax.tree.map(lambda _: rate, tree)
        rates = {}

        def rate_for(m):
            if m not in rates:
                rates[m] = _computed_once(
                    lr_scheduler.mxnet_schedule(learning_rate, lr_mult=m)(count))
            return rates[m]
        return jax.tree.map(rate_for, mults)
    lr = _computed_once(learning_rate(count)) if callable(learning_rate) else learning_rate
    return scale_by_multipliers(lr, lr_mult, tree, "lr_mult")


def _computed_once(rate: Any) -> Any:
    """A rate the step computes from its count (a schedule's cosine, a
    scheduler's table lookup), in a kernel of its own under a trace.

    XLA fuses cheap scalar arithmetic into every loop that reads it, so each
    leaf's loop would recompute the schedule: its instructions times the leaf
    count in the compiled step, and in every distinct kernel LLVM compiles
    (ResNet-50 in Flax's layout: 1,700 of 19,300 instructions after
    optimization for a cosine schedule). :func:`mxopt._kernels.own_kernel`
    computes it once and the loops read it; the value is the same.
    """
    return K.own_kernel(rate) if v.is_traced(rate) and jnp.ndim(rate) == 0 else rate


# ----------------------------------------------------------------------------------
# Per-leaf evaluation
# ----------------------------------------------------------------------------------

def per_leaf(fn: Callable) -> Callable:
    """``fn``, a per-leaf update, traced and lowered once per distinct signature
    rather than once per leaf when called under a trace (``jax.jit``).

    A model repeats a few dozen shapes over hundreds of leaves, and lowering the
    same expression again for each leaf dominated tracing the step. The
    arguments are flattened as pytrees (a kernel's hyperparameter dict too);
    traced leaves are passed to a nested ``jax.jit`` keyed by shape and dtype,
    and the others (Python numbers such as a per-leaf ``lr * lr_mult``, concrete
    arrays, None) stay constants of the traced function, exactly as without it,
    so static decisions (a zero ``wd`` skipping the decay) and the rounding are
    unchanged. XLA inlines the calls: the compiled step is the same. Outside a
    trace ``fn`` runs as is.
    """
    cache = {}

    def key(a):
        if a is None or isinstance(a, (bool, int, float, complex, str)):
            return (type(a), a)
        return ("id", id(a))  # alive for as long as this update call

    def call(*args):
        leaves, treedef = jax.tree.flatten(args)
        traced = tuple(v.is_traced(a) for a in leaves)
        if not any(traced):
            return fn(*args)
        sig = (treedef,) + tuple(None if t else key(a) for a, t in zip(leaves, traced))
        jitted = cache.get(sig)
        if jitted is None:
            consts = [None if t else a for a, t in zip(leaves, traced)]

            def with_consts(*dynamic):
                it = iter(dynamic)
                full = [next(it) if t else c for t, c in zip(traced, consts)]
                return fn(*jax.tree.unflatten(treedef, full))
            jitted = cache[sig] = jax.jit(with_consts)
        return jitted(*(a for a, t in zip(leaves, traced) if t))

    return call


def _check_entry(entry: Any, x: Any, name: str, who: str, *, field: str = "",
                 scalar_ok: bool = False) -> None:
    """A state buffer's entry for the leaf ``name`` has the leaf's shape (a 0-d
    entry is also accepted where ``scalar_ok``: a per-leaf hyperparameter such
    as a learning rate travels with the state buffers in ``map_leaves``)."""
    if isinstance(entry, optax.MaskedNode) or (jnp.shape(entry) != jnp.shape(x) and not (
            scalar_ok and jnp.ndim(entry) == 0)):
        got = "no entry" if isinstance(entry, optax.MaskedNode) else f"shape {jnp.shape(entry)}"
        raise ValueError(f"{who}: the optimizer state does not match the params: "
                         f"{_field(field)} has {got} for {name!r}, whose param has shape "
                         f"{jnp.shape(x)}. Build the state with tx.init(params)")


def map_leaves(fn: Callable, num_outputs: int, tree: Any, *others: Any, who: str = "mxopt"):
    """Apply ``fn`` to each floating leaf of ``tree`` and the matching leaves of
    ``others`` (trees shaped like it), returning ``num_outputs`` trees. An
    integer or bool leaf passes through as the first output and gets
    ``optax.MaskedNode()`` in the others; a complex one is refused."""
    names, leaves, treedef = _named(tree)
    fn = per_leaf(fn)
    columns = [_check_buffer(o, "", names, leaves, treedef, who, has_entry=lambda _: False)
               for o in others]
    outs = []
    for i, (name, x) in enumerate(zip(names, leaves)):
        kind = leaf_kind(x)
        if kind == "complex":
            _refuse_complex(who, name, x)
        if kind == "float":
            for c in columns:
                _check_entry(c[i], x, name, who, scalar_ok=True)
            outs.append(tuple(fn(x, *(c[i] for c in columns))))
        else:
            outs.append((x,) + (optax.MaskedNode(),) * (num_outputs - 1))
    return tuple(treedef.unflatten([o[k] for o in outs]) for k in range(num_outputs))


# ----------------------------------------------------------------------------------
# Skipping non-finite steps
# ----------------------------------------------------------------------------------

def all_finite(grads: Any) -> jax.Array:
    """Whether every element of every floating leaf is finite.

    ``sum(g - g)`` is 0 when every element of ``g`` is finite and NaN otherwise
    (``inf - inf`` and ``NaN - NaN`` are NaN, and NaN propagates through
    additions), and unlike ``sum(g)`` it cannot overflow. It is one plain
    add-reduction that XLA reads straight from the gradient, on any sharding (a
    custom combiner does not compile on a sharded operand; ``all(isfinite(g))``
    and, oddly, ``sum(g * 0)`` made XLA:CPU write a parameter-sized temporary
    first, which ``tests/test_step_structure.py`` catches).
    """
    leaves = [g for g in jax.tree.leaves(grads) if is_float(g)]
    if not leaves:
        return jnp.asarray(True)
    zeros = [jax.lax.reduce(g - g, jnp.zeros((), g.dtype), jax.lax.add, tuple(range(g.ndim)))
             for g in leaves]
    return jnp.isfinite(sum(z.astype(jnp.float32) for z in zeros))


def _stored_grads_finite(grads: Any) -> jax.Array:
    # all_finite under master weights, taken from the gradients as the caller
    # holds them. Inside, it would sum the float32 casts the kernels read too:
    # XLA:CPU hands a large reduction to a YNNPACK fusion, which takes in only
    # producers nothing else reads, so the shared casts were written to memory
    # first (twice the float16 gradients' bytes). K.apart gives the check its
    # own casts, from the gradients in memory; the barrier holds a scalar of
    # its own too, so that XLA does not merge it with a kernel's apart() of
    # the same gradient (LARS's norm), whose cast would then be shared again.
    low = [g for g in jax.tree.leaves(grads) if is_float(g) and _is_low(g)]
    _, *own = K.apart(jnp.zeros((), jnp.bool_), *low)
    return all_finite([g for g in jax.tree.leaves(grads) if is_float(g) and not _is_low(g)]
                      + [g.astype(jnp.float32) for g in own])


def finiteness_flag(grads: Any, grads_finite: Any, skip_nonfinite: bool, who: str):
    """None when steps are never skipped; else the traced scalar bool saying
    whether this step's gradients are all finite (``grads_finite`` when the
    caller computed it)."""
    if not skip_nonfinite:
        if grads_finite is not None:
            raise TypeError(f"{who}: grads_finite is only used with skip_nonfinite=True")
        return None
    if grads_finite is None:
        return all_finite(grads)
    flag = jnp.asarray(grads_finite)
    if flag.shape != () or flag.dtype != jnp.bool_:
        raise TypeError(f"{who}: grads_finite must be a scalar bool (whether every "
                        f"gradient element is finite), got {flag.dtype}{list(flag.shape)}")
    return flag


def skip_state(finite: jax.Array, state: optax.ApplyIfFiniteState,
               inner: optax.OptState) -> optax.ApplyIfFiniteState:
    """``optax.apply_if_finite``'s state after a step, with the same counters."""
    return optax.ApplyIfFiniteState(
        notfinite_count=jnp.where(finite, jnp.zeros([], jnp.int32),
                                  optax.safe_increment(state.notfinite_count)),
        last_finite=finite,
        total_notfinite=jnp.where(finite, state.total_notfinite,
                                  optax.safe_increment(state.total_notfinite)),
        inner_state=inner)


def _fresh_skip_state(inner: optax.OptState) -> optax.ApplyIfFiniteState:
    return optax.ApplyIfFiniteState(
        notfinite_count=jnp.zeros([], jnp.int32), last_finite=jnp.array(True, jnp.bool_),
        total_notfinite=jnp.zeros([], jnp.int32), inner_state=inner)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``inner`` whose steps are skipped when a gradient is not finite: the state
    and the counters are ``optax.apply_if_finite``'s (never giving up), but the
    choice is elementwise (``keep_if`` on every state leaf, a zero update),
    not a ``lax.cond``, whose branches lose the sharding types of a mesh with
    Explicit axes. This is the composed path's skip; a fused optimizer makes the
    same choice inside its kernels, where it costs no extra pass.

    ``grads_finite=`` (a scalar bool computed elsewhere) replaces the check.
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        return _fresh_skip_state(inner.init(params))

    def update_fn(updates, state, params=None, grads_finite=None, **extra_args):
        check_state(state, optax.ApplyIfFiniteState, "skip_nonfinite")
        finite = finiteness_flag(updates, grads_finite, True, "skip_nonfinite")
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        kept = jax.tree.map(lambda n, o: K.keep_if(finite, n, o), new_inner, state.inner_state)
        return (jax.tree.map(lambda u: K.update_if(finite, u), new_updates),
                skip_state(finite, state, kept))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# Master weights
# ----------------------------------------------------------------------------------

class MasterWeightsState(NamedTuple):
    """State of :func:`mxopt.master_weights`.

    ``master`` holds a float32 copy of each float16/bfloat16 param and
    ``optax.MaskedNode()`` for every other leaf; ``inner_state`` is the wrapped
    transformation's state, built on the masters.
    """
    master: Any
    inner_state: optax.OptState


def _is_low(x: Any) -> bool:
    return _dtype(x) in LOW_PRECISION_DTYPES


def _float32_copy(p: Any) -> jax.Array:
    if isinstance(p, jax.ShapeDtypeStruct):  # abstract init: shape, dtype and sharding
        return jnp.zeros_like(p, dtype=jnp.float32)
    return p.astype(jnp.float32)


def master_weights(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Run ``inner`` on float32 master copies of float16/bfloat16 params.

    For each float16/bfloat16 leaf: ``init`` stores ``master = param.astype(f32)``
    and builds ``inner``'s state on the masters; ``update`` casts the gradient to
    float32, runs ``inner`` on the master, adds its update to the master in
    float32, and returns the update that takes the param to the new master cast
    to the param's dtype. float32/float64 and integer leaves pass straight to
    ``inner`` and get no extra state.

    Updates of float16/bfloat16 leaves are **float32**, not the gradients'
    dtype (optax's usual rule), so that ``optax.apply_updates`` (which adds in
    float32 and casts back) lands on ``master.astype(dtype)`` bit for bit
    whenever the new value is within 2**13 (float16) or 2**16 (bfloat16) of the
    old one in magnitude ratio, i.e. unless a weight shrinks by more than that
    in a single step; then it lands within an ulp of the old weight's scale,
    and the master, which is the truth, is unaffected. One consequence: optax
    wrappers whose branches must have equal types cannot wrap it, notably
    ``optax.apply_if_finite`` (use the optimizer's ``skip_nonfinite=True``,
    which skips inside the masters); ``optax.MultiSteps`` and ``optax.chain``
    work.

    Extra keyword arguments of ``update`` (``optax.GradientTransformationExtraArgs``)
    are passed on to ``inner`` when it takes them.

    Args:
      inner: any optax transformation (e.g. ``mxopt.rmsprop(...)``).
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        check_params(params, "master_weights")
        master = jax.tree.map(lambda p: _float32_copy(p) if _is_low(p) else optax.MaskedNode(),
                              params)
        inner_params = jax.tree.map(lambda p, m: m if _is_low(p) else p, params, master)
        return MasterWeightsState(master=master, inner_state=inner.init(inner_params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise needs_params("master_weights")
        check_state(state, MasterWeightsState, "master_weights")
        names, treedef = check_grads_match_params(updates, params, "master_weights")
        flat_params = treedef.flatten_up_to(params)
        flat_master = _check_buffer(state.master, "master", names, flat_params, treedef,
                                    "master_weights", has_entry=_is_low)
        flat_grads = treedef.flatten_up_to(updates)
        low = [_is_low(p) for p in flat_params]
        inner_params = treedef.unflatten(
            [m if is_low else p for is_low, p, m in zip(low, flat_params, flat_master)])
        inner_grads = treedef.unflatten(
            [g.astype(jnp.float32) if is_low else g for is_low, g in zip(low, flat_grads)])
        inner_updates, inner_state = inner.update(inner_grads, state.inner_state, inner_params,
                                                  **extra_args)
        flat_inner = treedef.flatten_up_to(inner_updates)
        new_master, out = [], []
        for is_low, p, m, u in zip(low, flat_params, flat_master, flat_inner):
            if not is_low:
                new_master.append(m)
                out.append(u)
                continue
            master = (m + u).astype(jnp.float32)
            # target - p is exact in float32 for float16/bfloat16 values of
            # similar magnitude, so p + update == target after apply_updates.
            p32 = p.astype(jnp.float32)
            out.append(master.astype(p.dtype).astype(jnp.float32) - p32)
            new_master.append(master)
        return (treedef.unflatten(out),
                MasterWeightsState(master=treedef.unflatten(new_master), inner_state=inner_state))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------

class Carry(NamedTuple):
    """A scalar an optimizer carries from leaf to leaf within one step, and from
    step to step in its state (Nadam's ``m_schedule``, which MXNet keeps on the
    optimizer object and advances on every update call of every parameter).

    Leaves are visited in the params' flatten order (``jax.tree`` order: sorted
    keys for dicts), once per step each; integer and bool leaves are skipped.

    Attributes:
      field: the state field holding it (a float64 scalar where
        ``jax_enable_x64`` is on, else float32, for a float ``init``).
      init: its value in a fresh state: a Python float, or any array (a PRNG
        key, as SGLD carries its noise key; an integer counter), kept with
        its shape and dtype.
      advance: ``advance(carry, hp) -> (hp_additions, new_carry)``, run per
        floating leaf after ``fold``; ``hp_additions`` are merged into the
        leaf's ``hp``. A float carry is a Python float when the count is
        concrete (outside ``jax.jit``: host float64, as MXNet's Python side
        computes), a traced scalar otherwise; an array carry is an array.
      per_leaf: False advances it once per step instead, at the first
        floating leaf, every leaf of the step getting the same additions.
    """
    field: str
    init: float
    advance: Callable[[Any, dict], Any]
    per_leaf: bool = True


class Optimizer(NamedTuple):
    """What an optimizer tells :func:`fused`.

    Attributes:
      who: how errors name it, e.g. ``"mxopt.rmsprop(centered=True)"``.
      kernel: ``kernel(grad, weight, *buffers, hp, finite) -> (update, *buffers)``,
        from :mod:`mxopt._kernels`.
      state_cls: its state, a NamedTuple ``(count, *buffers)``.
      hyper: the kernel's hyperparameters other than ``lr``, ``wd`` and ``t``
        (Python numbers or JAX scalars), e.g. ``rescale_grad``, ``clip_gradient``.
      fold: None, or ``fold(hp) -> hp``, run per leaf before the kernel, for
        what MXNet's Python side computes from the update count before calling
        its kernel (Adam folds its bias correction into ``lr``). ``hp["t"]`` is
        this update's count including ``begin_num_update`` (MXNet's per-index
        ``t``): a Python int outside ``jax.jit`` (so host arithmetic is
        MXNet's float64), a traced int32 under it.
      low_precision_state: False where MXNet keeps float32 state and refuses
        float16 weights without ``multi_precision`` (AdaGrad, AdaDelta, Ftrl):
        ``init`` then refuses float16/bfloat16 params with an error naming the
        leaf and the fix, rather than accumulating in low precision.
      carry: None, or a :class:`Carry`: a scalar advanced leaf by leaf, held in
        the state field it names (the other fields after ``count`` are the
        per-leaf buffers).
      leaf_hyper: None, or ``leaf_hyper(names, stored) -> [dict, ...]``: static
        hyperparameters per floating leaf (merged into its ``hp`` before
        ``fold``), from the floating leaves' names and the params as the
        caller holds them (``stored``: float16/bfloat16 under
        ``multi_precision``, where the kernel sees float32 masters), both in
        the params' flatten order. LARS's name rule and the chunks of a Gluon
        list call, and the dtype LARS and LAMB take their norms in.
      buffer_init: state field -> ``make(param) -> entry``, a fresh buffer
        entry for one floating param, for buffers that are not zeros like the
        param (DCASGD's copy of the weight, Test's float32 copy, GroupAdaGrad's
        ``(rows, 1)`` history). ``make`` must accept an abstract param
        (``jax.ShapeDtypeStruct``, with its sharding) and should derive the
        entry from the param elementwise or by a reduction, so that the entry
        follows the param's sharding; the state checks expect each entry to
        have the shape ``make`` gives. Other buffers are zeros like the param.
      counts: False where MXNet never counts updates (Test): the count stays
        at ``begin_num_update``.
      rate_before_count: True where MXNet reads the rate before counting
        (LBSGD): the first floating leaf of a step gets an MXNet scheduler's
        rate at the old count (:func:`learning_rates`, ``before_count``).
      leaf_rule: None, or ``rule(name, param, wd)``, run by ``init`` for each
        floating leaf with its decay after multipliers; it raises, naming the
        leaf, for a param the optimizer cannot train (GroupAdaGrad: 2-D
        weights, no decay).
      rate_parse: None, or how the kernel receives a Python rate (e.g.
        :func:`mxopt._mxnumbers.tuple_float` for ``multi_sgd_*``'s
        ``Tuple<float>`` rates): an MXNet scheduler's float32 table for a
        traced count is then rounded that way
        (:func:`mxopt.lr_scheduler.rates_parsed_as`), so a jitted step reads the
        rate an eager one does.
    """
    who: str
    kernel: Callable
    state_cls: type
    hyper: dict
    fold: Optional[Callable[[dict], dict]] = None
    low_precision_state: bool = True
    carry: Optional[Carry] = None
    leaf_hyper: Optional[Callable[[list, list], list]] = None
    buffer_init: Any = None
    counts: bool = True
    rate_before_count: bool = False
    leaf_rule: Optional[Callable[[str, Any, Any], None]] = None
    rate_parse: Optional[Callable[[float], float]] = None


def fused(opt: Optimizer, *, learning_rate: ScalarOrSchedule, wd: Any, lr_mult: Any,
          wd_mult: Any, begin_num_update: Any, clip_weights: Any = None,
          multi_precision: bool = False,
          skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """The optimizer ``opt`` as an optax transformation that evaluates each
    floating leaf in one expression: ``opt.kernel``, then weight clipping and
    the finiteness choice, traced once per leaf signature. The arguments are
    the Optimizer-base options every mxopt optimizer takes (checked by the
    caller)."""
    if multi_precision:
        # skip_nonfinite inside the master weights, so the check and the skipped
        # update see float32 gradients and updates; master_weights passes
        # grads_finite on.
        outer = master_weights(fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult,
                                     wd_mult=wd_mult, begin_num_update=begin_num_update,
                                     clip_weights=clip_weights, skip_nonfinite=skip_nonfinite))
        if opt.leaf_hyper is None and not skip_nonfinite:
            return outer

        def stored_update(updates, state, params=None, **extra_args):
            if skip_nonfinite and extra_args.get("grads_finite") is None:
                extra_args["grads_finite"] = _stored_grads_finite(updates)
            if opt.leaf_hyper is not None:
                # The kernel sees the masters; leaf_hyper also sees the stored params.
                extra_args["_stored_params"] = params
            return outer.update(updates, state, params, **extra_args)

        return optax.GradientTransformationExtraArgs(outer.init, stored_update)
    who, state_cls, carry = opt.who, opt.state_cls, opt.carry
    buffers = tuple(f for f in state_cls._fields[1:] if carry is None or f != carry.field)
    made = dict(opt.buffer_init or {})
    _STATE_MAKERS.setdefault(state_cls, who)
    clips_weights = not K.clip_is_static_off(clip_weights)

    def leaf(g, w, bufs, hp, finite):
        u, *new = opt.kernel(g, w, *bufs, hp, finite)
        if clips_weights:
            u = K.clipped_weight_update(w, u, clip_weights)
        if any(u is b for b in new):  # the new weight's loop would be a lone add
            u = K.own_loop(u)
        # K.stored_weight writes w + this update with the same expression, so
        # that a kernel reading the new weight reads the step's output (and its
        # loop is ordered after the weight's): keep the two in step.
        return (K.update_if(finite, u), *new)

    def init_fn(params):
        check_params(params, who)
        if opt.low_precision_state:
            warn_low_precision(params, who)
        else:
            refuse_low_precision(params, who)
        # Resolving the multipliers here reports a bad name before training starts.
        multipliers.resolve(lr_mult, params, "lr_mult")
        multipliers.resolve(wd_mult, params, "wd_mult")
        if opt.leaf_rule is not None:
            names, leaves, treedef = _named(params)
            wds = treedef.flatten_up_to(scale_by_multipliers(wd, wd_mult, params, "wd_mult"))
            for name, p, leaf_wd in zip(names, leaves, wds):
                if is_float(p):
                    opt.leaf_rule(name, p, leaf_wd)
        fields = {b: zeros_for_float_leaves(params) if b not in made else jax.tree.map(
            lambda p, make=made[b]: make(p) if is_float(p) else optax.MaskedNode(), params)
            for b in buffers}
        if carry is not None:
            fields[carry.field] = _fresh_carry(carry.init)
        state = state_cls(count=initial_count(begin_num_update), **fields)
        return _fresh_skip_state(state) if skip_nonfinite else state

    def leaf_hypers(names, flat_params, stored_params, treedef):
        # Static per-leaf additions, one dict per floating leaf (None without leaf_hyper).
        if opt.leaf_hyper is None:
            return None
        flat_stored = (flat_params if stored_params is None
                       else treedef.flatten_up_to(stored_params))
        floating = [i for i, w in enumerate(flat_params) if is_float(w)]
        extra = opt.leaf_hyper([names[i] for i in floating], [flat_stored[i] for i in floating])
        return dict(zip(floating, extra))

    def step(updates, state, params, names, treedef, finite, stored_params=None):
        check_state(state, state_cls, who)
        _check_count(state.count, who)
        flat_params = treedef.flatten_up_to(params)
        columns = [_check_buffer(getattr(state, b), b, names, flat_params, treedef, who,
                                 make=made.get(b)) for b in buffers]
        with (lr_scheduler.rates_parsed_as(opt.rate_parse) if opt.rate_parse is not None
              else contextlib.nullcontext()):
            lrs = treedef.flatten_up_to(learning_rates(learning_rate, state.count, lr_mult,
                                                       params))
            if opt.rate_before_count:
                first = next((i for i, w in enumerate(flat_params) if is_float(w)), None)
                if first is not None:
                    lrs[first] = treedef.flatten_up_to(learning_rates(
                        learning_rate, state.count, lr_mult, params, before_count=True))[first]
        wds = treedef.flatten_up_to(scale_by_multipliers(wd, wd_mult, params, "wd_mult"))
        t = state.count + 1 if v.is_traced(state.count) else int(state.count) + 1
        if carry is not None:
            stored = _check_carry(getattr(state, carry.field), carry.init, carry.field, who)
            # Host float64 when the count is concrete, as MXNet's Python side.
            value = (float(stored) if isinstance(carry.init, float) and isinstance(t, int)
                     and not v.is_traced(stored) else stored)
            additions = {}
        per_leaf_extra = leaf_hypers(names, flat_params, stored_params, treedef)
        outs = []
        # Per step: the per-leaf functions close over the step's shared scalars.
        leaf_fn = per_leaf(leaf)
        with K.sharing_hypers():
            for i, (g, w) in enumerate(zip(treedef.flatten_up_to(updates), flat_params)):
                if is_float(w):
                    hp = dict(opt.hyper, lr=lrs[i], wd=wds[i], t=t)
                    if per_leaf_extra is not None:
                        hp.update(per_leaf_extra[i])
                    if opt.fold is not None:
                        hp = opt.fold(hp)
                    if carry is not None:
                        if carry.per_leaf or not additions:
                            additions, value = carry.advance(value, hp)
                        hp.update(additions)
                    g, back = in_param_dtype(g, w)
                    K.share_hypers((*hp.values(), clip_weights), w)
                    u, *new_bufs = leaf_fn(g, w, tuple(c[i] for c in columns), hp, finite)
                    outs.append((back(u), *new_bufs))
                else:  # integer and bool leaves pass through with no state
                    outs.append((jnp.zeros_like(w),) + (optax.MaskedNode(),) * len(buffers))
        new = dict(zip(buffers, (treedef.unflatten([o[k] for o in outs])
                                 for k in range(1, 1 + len(buffers)))))
        if carry is not None:
            new[carry.field] = K.keep_if(finite, jnp.asarray(value, stored.dtype), stored)
        count = state.count
        if opt.counts:
            count = K.keep_if(finite, optax.safe_increment(state.count), state.count)
        return treedef.unflatten([o[0] for o in outs]), state_cls(count=count, **new)

    def update_fn(updates, state, params=None, grads_finite=None, **extra_args):
        # The params as the caller stores them, from fused's multi_precision
        # wrapper; the rest are other transformations' (optax.chain passes them to all).
        stored_params = extra_args.pop("_stored_params", None)
        if params is None:
            raise needs_params(who)
        names, treedef = check_grads_match_params(updates, params, who)
        finite = finiteness_flag(updates, grads_finite, skip_nonfinite, who)
        if finite is None:
            return step(updates, state, params, names, treedef, None, stored_params)
        check_state(state, optax.ApplyIfFiniteState, who + " with skip_nonfinite=True")
        updates, inner = step(updates, state.inner_state, params, names, treedef, finite,
                              stored_params)
        return updates, skip_state(finite, state, inner)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def checked_chain(who: str, *links: optax.GradientTransformation
                  ) -> optax.GradientTransformationExtraArgs:
    """``optax.chain(*links)`` (a composed optimizer such as ``rmsprop_chain``)
    behind the checks and leaf rules of :func:`fused`, so both paths accept and
    refuse the same inputs and return the same dtypes. ``init`` refuses complex
    leaves and warns about float16/bfloat16 state; ``update`` needs the params,
    checks the gradients against them, runs the links on gradients in the
    params' dtypes (:func:`in_param_dtype`), hands integer/bool leaves a zero
    update (the links pass it through), and returns each update in its
    gradient's dtype. The state is ``optax.chain``'s, with an empty first
    entry for the checks."""

    def check_init(params):
        check_params(params, who)
        warn_low_precision(params, who)
        return optax.EmptyState()

    def passed_update(updates, state, params=None):  # checked and cast below
        del params
        return updates, state

    chain = optax.chain(optax.GradientTransformation(check_init, passed_update), *links)

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise needs_params(who)
        _, treedef = check_grads_match_params(updates, params, who)
        flat, backs = [], []
        for g, w in zip(treedef.flatten_up_to(updates), treedef.flatten_up_to(params)):
            g, back = in_param_dtype(g, w) if is_float(w) else (jnp.zeros_like(w), None)
            flat.append(g)
            backs.append(back)
        out, new_state = chain.update(treedef.unflatten(flat), state, params, **extra_args)
        flat_out = [u if back is None else back(u)
                    for u, back in zip(treedef.flatten_up_to(out), backs)]
        return treedef.unflatten(flat_out), new_state

    return optax.GradientTransformationExtraArgs(chain.init, update_fn)
