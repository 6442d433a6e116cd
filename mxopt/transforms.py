"""MXNet's RMSProp, taken apart into composable Optax gradient transformations.

Each function returns an :class:`optax.GradientTransformation` whose state is a
``NamedTuple``; chained in MXNet's order they compute what MXNet 1.9.1's
``rmsprop_update`` / ``rmspropalex_update`` kernels compute::

    optax.chain(rescale_gradient(r), add_weight_decay(wd), clip_gradient(c),
                scale_by_rms(gamma1, eps), scale_by_learning_rate(lr),
                clip_weights(b))                                  # Tieleman & Hinton
    optax.chain(rescale_gradient(r), add_weight_decay(wd), clip_gradient(c),
                scale_by_centered_rms(gamma1, eps), graves_momentum(lr, gamma2),
                clip_weights(b))                                  # Graves (centered)

Why not optax's own ``scale``, ``add_decayed_weights``, ``clip`` and
``scale_by_rms``: MXNet rounds every hyperparameter to float32 and evaluates the
kernel in the weight's dtype, computing ``1 - gamma1`` in that dtype too. Optax
multiplies by the hyperparameter as given, so a float32 jax scalar promotes a
bfloat16 update to float32 and ``1 - 0.9`` is rounded once from float64; its
``scale_by_rms`` also uses ``rsqrt``. The transformations here cast each
hyperparameter the way MXNet does and keep every leaf in its own dtype.

Hyperparameters may be Python numbers or JAX scalars, traced ones included (as
under ``optax.inject_hyperparams``): nothing branches on a traced value.
"""
from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mxopt import _validation as v
from mxopt import multipliers

__all__ = [
    "rescale_gradient",
    "add_weight_decay",
    "clip_gradient",
    "scale_by_rms",
    "ScaleByRmsState",
    "scale_by_centered_rms",
    "ScaleByCenteredRmsState",
    "scale_by_learning_rate",
    "ScaleByLearningRateState",
    "graves_momentum",
    "GravesMomentumState",
    "clip_weights",
    "scale_by_lr_mult",
]

Scalar = Union[float, jax.Array]
ScalarOrSchedule = Union[float, jax.Array, optax.Schedule]

_NEEDS_PARAMS = "{} needs the params: call update(updates, state, params)."


def _hyper(value: Scalar, like: jax.Array) -> jax.Array:
    """``value`` as MXNet passes it to its kernel: rounded to float32 (operator
    parameters are C++ floats), then cast to the leaf's dtype.

    The scalar goes through an optimization barrier so that XLA cannot treat a
    static hyperparameter as a constant and reassociate around it: it rewrites
    ``(5 * a) * (5 * a)`` as ``(a * a) * 25``, which rounds differently from MXNet.
    """
    scalar = jnp.asarray(value, dtype=jnp.float32).astype(like.dtype)
    return jax.lax.optimization_barrier(scalar)


def _one_minus(value: Scalar, like: jax.Array) -> jax.Array:
    # The kernel computes (1.f - gamma1) in the weight's dtype, from the rounded gamma1.
    return (jnp.ones((), like.dtype) - _hyper(value, like)).astype(like.dtype)


def _bound(bound: Scalar, like: jax.Array) -> jax.Array:
    """A clip bound as MXNet passes it, with a traced bound that is not > 0 (off)
    replaced by infinity: clipping to [-inf, inf] changes nothing, NaN included.

    Deciding on the scalar rather than selecting between clipped and unclipped
    arrays keeps the per-element work the same as for a static bound, and keeps
    XLA from materialising the clipped gradient (a select between two arrays is
    not cheap to duplicate into the step's two output fusions).
    """
    b = _hyper(bound, like)
    if v.is_traced(bound):
        b = jax.lax.select(b > 0, b, jnp.asarray(jnp.inf, b.dtype))
    return b


def _clip(x: jax.Array, bound: Scalar) -> jax.Array:
    """MXNet's elementwise clip to [-bound, bound], on only when ``bound > 0``
    (None and 0 switch it off). Static bounds decide in Python; a traced one that
    is not > 0 clips to [-inf, inf]."""
    b = _bound(bound, x)
    return jnp.minimum(jnp.maximum(x, -b), b)


def _clip_is_static_off(bound: Optional[Scalar]) -> bool:
    return bound is None or (not v.is_traced(bound) and not v.static_value(bound) > 0)


def _rounded(product: jax.Array) -> jax.Array:
    """``product``, rounded on its own as MXNet's kernels round it.

    Under ``jax.jit`` LLVM contracts ``a * b + c`` into a fused multiply-add, which
    skips the product's rounding; a step of mxopt then differs from MXNet by an
    ulp here and there, and Graves' ``n - g_avg**2`` amplifies such ulps once the
    gradient is steady. ``max(p, lowest)`` equals ``p`` except that ``-inf``
    becomes the lowest finite value (an update that is NaN anyway), and LLVM
    cannot see through it, so the product is rounded and then added.
    """
    return jnp.maximum(product, jnp.asarray(jnp.finfo(product.dtype).min, product.dtype))


def _is_static(value: Any, target: float) -> bool:
    return value is not None and not v.is_traced(value) and v.static_value(value) == target


def _rescale(g: jax.Array, rescale_grad: Scalar) -> jax.Array:
    # Multiplying by a static 1.0 is exact; skip it to save a pass.
    return g if _is_static(rescale_grad, 1.0) else _rounded(_hyper(rescale_grad, g) * g)


def _decay(g: jax.Array, w: jax.Array, wd: Scalar) -> jax.Array:
    # g + 0 * w == g for finite weights; a static zero skips reading w.
    return g if _is_static(wd, 0.0) else g + _rounded(_hyper(wd, g) * w)


def _mean_square(g: jax.Array, n: jax.Array, gamma1: Scalar, *, centered: bool) -> jax.Array:
    one_minus, decay = _one_minus(gamma1, g), _hyper(gamma1, g)
    if centered:
        # ((1 - gamma1) * g) * g: the grouping of MXNet's centered kernel.
        return _rounded(one_minus * g * g) + _rounded(decay * n)
    return _rounded(one_minus * (g * g)) + _rounded(decay * n)


def _mean(g: jax.Array, g_avg: jax.Array, gamma1: Scalar) -> jax.Array:
    return _rounded(_one_minus(gamma1, g) * g) + _rounded(_hyper(gamma1, g) * g_avg)


def _root(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` that XLA keeps as a square root.

    XLA rewrites ``y / sqrt(x)`` as ``y * rsqrt(x)``, which differs from MXNet by
    an ulp in about 40% of elements. A ``reduce_precision`` to the dtype's own
    precision changes no value but stops that rewrite.
    """
    info = jnp.finfo(x.dtype)
    return jax.lax.reduce_precision(jnp.sqrt(x), exponent_bits=info.nexp,
                                    mantissa_bits=info.nmant)


def _centered_root(n: jax.Array, g_avg: jax.Array, epsilon: Scalar) -> jax.Array:
    # n - g_avg**2 cancels catastrophically once the gradient is steady (e.g.
    # clipped), so an FMA here (exact product) would move the result far from
    # MXNet's rounded product. max(p, 0) == p for a square, and it stands between
    # the multiply and the subtract so LLVM cannot contract them.
    square = jnp.maximum(g_avg * g_avg, jnp.zeros((), g_avg.dtype))
    return _root(n - square + _hyper(epsilon, n))


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _zeros_like_sharded(p: jax.Array) -> jax.Array:
    """Zeros with ``p``'s shape, dtype and, under ``jax.jit``, sharding.

    ``jnp.zeros_like`` of a traced param is a constant, which GSPMD leaves
    unsharded: ``jax.jit(tx.init)`` would put all the state on one device. This
    elementwise expression is exactly +0 for every value of ``p`` (NaN and inf
    included) yet depends on ``p``, so the state takes ``p``'s sharding.
    """
    m = jnp.minimum(jnp.abs(p), jnp.zeros((), p.dtype))
    return jnp.where(m == m, m, jnp.zeros((), p.dtype))


def _zeros_for_float_leaves(params: Any) -> Any:
    """Zeros like each floating leaf (sharded like it); ``optax.MaskedNode()`` for
    integer/bool leaves, which optimizers leave untouched and keep no state for."""
    return jax.tree.map(
        lambda p: _zeros_like_sharded(p) if _is_float(p) else optax.MaskedNode(), params)


def _warn_low_precision(params: Any, who: str) -> None:
    """Warn once, as MXNet's ``create_state_multi_precision`` does, when state will
    accumulate in float16/bfloat16."""
    low = [leaf for leaf in jax.tree.leaves(params)
           if jnp.result_type(leaf) in (jnp.float16, jnp.bfloat16)]
    if low:
        warnings.warn(f"{who}: {len(low)} float16/bfloat16 parameter(s): accumulating with "
                      "float16/bfloat16 in the optimizer can lead to poor accuracy or slow "
                      "convergence. Consider multi_precision=True (float32 master weights).",
                      UserWarning, stacklevel=3)


def _check_grads_match_params(updates: Any, params: Any, who: str):
    """Leaf names and the params' treedef, after checking that ``updates`` has the
    params' structure and each floating leaf its param's shape and dtype."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [multipliers.leaf_name(p) for p, _ in paths]
    try:
        grads = treedef.flatten_up_to(updates)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{who}: the gradients do not have the structure of the params: "
                         f"{e}") from None
    for name, (_, w), g in zip(names, paths, grads):
        if not _is_float(w):
            continue
        if jnp.shape(g) != jnp.shape(w):
            raise ValueError(f"{who}: the gradient of {name!r} has shape {jnp.shape(g)}, "
                             f"its param has shape {jnp.shape(w)}")
        if jnp.result_type(g) != jnp.result_type(w):
            raise TypeError(f"{who}: the gradient of {name!r} has dtype {jnp.result_type(g)}, "
                            f"its param has dtype {jnp.result_type(w)}")
    return names, treedef


def _scale_by_multipliers(value: Any, spec: Any, params: Any, argname: str) -> Any:
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


def _is_mxnet_scheduler(learning_rate: Any) -> bool:
    from mxopt import lr_scheduler  # noqa: PLC0415 (lr_scheduler imports this module)
    return isinstance(learning_rate, lr_scheduler.LRScheduler)


def _learning_rate_at(learning_rate: ScalarOrSchedule, count: jax.Array):
    """The rate of the update that follows ``count`` updates.

    An :mod:`mxopt.lr_scheduler` scheduler follows MXNet, which increments
    ``num_update`` before reading the rate: ``scheduler(count + 1)``. Any other
    schedule follows optax: ``schedule(count)``.
    """
    if _is_mxnet_scheduler(learning_rate):
        return learning_rate(count + 1)
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _learning_rates(learning_rate: ScalarOrSchedule, count: jax.Array, lr_mult: Any,
                    tree: Any) -> Any:
    """Per-leaf learning rates of the update that follows ``count`` updates.

    For an :mod:`mxopt.lr_scheduler` scheduler the product ``rate * lr_mult`` is
    taken in float64 on the host, as MXNet does, before the float32 cast.
    """
    if _is_mxnet_scheduler(learning_rate):
        from mxopt import lr_scheduler  # noqa: PLC0415
        mults = multipliers.resolve(lr_mult, tree, "lr_mult")
        if mults is None:
            return jax.tree.map(lambda _: learning_rate(count + 1), tree)
        return jax.tree.map(
            lambda m: lr_scheduler.mxnet_schedule(learning_rate, lr_mult=m)(count), mults)
    lr = _learning_rate_at(learning_rate, count)
    return _scale_by_multipliers(lr, lr_mult, tree, "lr_mult")


def _initial_count(begin_num_update: Any) -> jax.Array:
    # optax.inject_hyperparams hands every int argument over as an array.
    if (isinstance(begin_num_update, (jax.Array, np.ndarray)) and begin_num_update.ndim == 0
            and jnp.issubdtype(begin_num_update.dtype, jnp.integer)):
        if v.is_traced(begin_num_update):
            return begin_num_update.astype(jnp.int32)
        begin_num_update = int(begin_num_update)
    if isinstance(begin_num_update, (bool, np.bool_)) or not isinstance(
            begin_num_update, (int, np.integer)):
        raise TypeError(f"begin_num_update must be an int, got {begin_num_update!r}")
    if not 0 <= begin_num_update < 2**31 - 1:
        raise ValueError(f"begin_num_update must be in [0, 2**31 - 1), got {begin_num_update}")
    return jnp.asarray(begin_num_update, jnp.int32)


def _map_leaves(fn, num_outputs: int, tree: Any, *others: Any):
    """Apply ``fn`` leaf by leaf over trees shaped like ``tree``, returning
    ``num_outputs`` trees (``fn`` returns a tuple of that length)."""
    leaves, treedef = jax.tree.flatten(tree)
    fn = _per_leaf(fn)
    outs = [fn(*row) for row in zip(leaves, *(treedef.flatten_up_to(o) for o in others))]
    return tuple(treedef.unflatten([o[i] for o in outs]) for i in range(num_outputs))


def _per_leaf(fn):
    """``fn``, a per-leaf update, traced and lowered once per distinct signature
    rather than once per leaf when called under a trace (``jax.jit``).

    A model repeats a few dozen shapes over hundreds of leaves, and lowering the
    same expression again for each leaf dominated tracing the step. Traced
    arguments are passed to a nested ``jax.jit`` (keyed by shape and dtype);
    the others (Python numbers such as a per-leaf ``lr * lr_mult``, concrete
    arrays) stay constants of the traced function, exactly as without it, so
    static decisions (a zero ``wd`` skipping the decay) and the rounding are
    unchanged. XLA inlines the calls: the compiled step is the same. Outside a
    trace ``fn`` runs as is.
    """
    cache = {}

    def key(a):
        if a is None or isinstance(a, (bool, int, float, complex, str)):
            return (type(a), a)
        return ("id", id(a))  # alive for as long as this update call

    def call(*args):
        traced = tuple(v.is_traced(a) for a in args)
        if not any(traced):
            return fn(*args)
        sig = tuple(None if t else key(a) for a, t in zip(args, traced))
        jitted = cache.get(sig)
        if jitted is None:
            consts = [None if t else a for a, t in zip(args, traced)]

            def with_consts(*dynamic):
                it = iter(dynamic)
                return fn(*(next(it) if t else c for t, c in zip(traced, consts)))
            jitted = cache[sig] = jax.jit(with_consts)
        return jitted(*(a for a, t in zip(args, traced) if t))

    return call


def _empty_init(params):
    del params
    return optax.EmptyState()


def rescale_gradient(rescale_grad: Scalar) -> optax.GradientTransformation:
    """Multiply gradients by MXNet's ``rescale_grad``: :math:`g \\leftarrow r \\cdot g`.

    Args:
      rescale_grad: the factor, usually ``1 / batch_size``; finite and > 0.
    """
    v.check_scalar("rescale_grad", rescale_grad, low=0.0, low_open=True)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: _rescale(g, rescale_grad), updates), state

    return optax.GradientTransformation(_empty_init, update_fn)


def add_weight_decay(wd: Scalar, wd_mult: Any = None) -> optax.GradientTransformation:
    """MXNet's weight decay, added to the gradient *before* clipping:
    :math:`g \\leftarrow g + (\\lambda \\cdot m) w`.

    Place it before :func:`clip_gradient` to follow MXNet (the decay term is
    clipped together with the gradient).

    Args:
      wd: the L2 coefficient :math:`\\lambda`; finite and >= 0.
      wd_mult: per-parameter multipliers :math:`m` (see :mod:`mxopt.multipliers`),
        e.g. :func:`mxopt.multipliers.no_decay_for_biases_and_norms`.
    """
    v.check_scalar("wd", wd, low=0.0)

    def init_fn(params):
        multipliers.resolve(wd_mult, params, "wd_mult")  # report bad names early
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format("add_weight_decay"))
        wds = _scale_by_multipliers(wd, wd_mult, params, "wd_mult")
        return jax.tree.map(lambda g, w, d: _decay(g, w, d), updates, params, wds), state

    return optax.GradientTransformation(init_fn, update_fn)


def clip_gradient(bound: Optional[Scalar]) -> optax.GradientTransformation:
    """Clip each gradient element to ``[-bound, bound]``, MXNet's ``clip_gradient``.

    ``None`` and ``0`` switch clipping off, as in MXNet. NaN passes through.

    Args:
      bound: None, 0, or a finite number > 0.
    """
    v.check_scalar("clip_gradient", bound, low=0.0, allow_none=True)

    def update_fn(updates, state, params=None):
        del params
        if _clip_is_static_off(bound):
            return updates, state
        return jax.tree.map(lambda g: _clip(g, bound), updates), state

    return optax.GradientTransformation(_empty_init, update_fn)


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: the running mean of squared gradients."""
    n: optax.Updates


def scale_by_rms(gamma1: Scalar = 0.9, epsilon: Scalar = 1e-8) -> optax.GradientTransformation:
    """Tieleman & Hinton's RMS scaling with epsilon *inside* the square root.

    .. math::
        n \\leftarrow (1 - \\gamma_1)(g \\cdot g) + \\gamma_1 n, \\qquad
        g \\leftarrow g / \\sqrt{n + \\epsilon}

    ``n`` starts at zero and has each parameter's dtype. Unlike
    ``optax.scale_by_rms`` the default places epsilon inside the root and there is
    no bias correction, as in MXNet.

    Args:
      gamma1: decay of the mean of squares, in [0, 1).
      epsilon: added to ``n`` under the root, >= 0.
    """
    v.check_scalar("gamma1", gamma1, low=0.0, high=1.0, high_open=True)
    v.check_scalar("epsilon", epsilon, low=0.0)

    def init_fn(params):
        return ScaleByRmsState(n=optax.tree_utils.tree_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params

        def leaf(g, n):
            n = _mean_square(g, n, gamma1, centered=False)
            return g / _root(n + _hyper(epsilon, g)), n

        updates, n = _map_leaves(leaf, 2, updates, state.n)
        return updates, ScaleByRmsState(n=n)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByCenteredRmsState(NamedTuple):
    """State of :func:`scale_by_centered_rms`: running means of g² and of g."""
    n: optax.Updates
    g_avg: optax.Updates


def scale_by_centered_rms(gamma1: Scalar = 0.9,
                          epsilon: Scalar = 1e-8) -> optax.GradientTransformation:
    """Graves' centered RMS scaling (Graves 2013, eq. 38-45), as in MXNet.

    .. math::
        n \\leftarrow (1 - \\gamma_1) g^2 + \\gamma_1 n, \\quad
        \\bar g \\leftarrow (1 - \\gamma_1) g + \\gamma_1 \\bar g, \\quad
        g \\leftarrow g / \\sqrt{n - \\bar g^2 + \\epsilon}

    When rounding makes :math:`n - \\bar g^2 + \\epsilon` negative the result is
    NaN, as in MXNet.

    Args:
      gamma1: decay of both running means, in [0, 1).
      epsilon: added under the root, >= 0.
    """
    v.check_scalar("gamma1", gamma1, low=0.0, high=1.0, high_open=True)
    v.check_scalar("epsilon", epsilon, low=0.0)

    def init_fn(params):
        zeros = optax.tree_utils.tree_zeros_like
        return ScaleByCenteredRmsState(n=zeros(params), g_avg=zeros(params))

    def update_fn(updates, state, params=None):
        del params

        def leaf(g, n, g_avg):
            n = _mean_square(g, n, gamma1, centered=True)
            g_avg = _mean(g, g_avg, gamma1)
            return g / _centered_root(n, g_avg, epsilon), n, g_avg

        updates, n, g_avg = _map_leaves(leaf, 3, updates, state.n, state.g_avg)
        return updates, ScaleByCenteredRmsState(n=n, g_avg=g_avg)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByLearningRateState(NamedTuple):
    """Step count of :func:`scale_by_learning_rate` (for schedules)."""
    count: jax.Array


def scale_by_learning_rate(learning_rate: ScalarOrSchedule, lr_mult: Any = None,
                           begin_num_update: int = 0) -> optax.GradientTransformation:
    """Scale by the negated learning rate: :math:`u \\leftarrow -(\\eta m) \\, u`.

    An optax schedule is called with the number of updates done so far (from
    ``begin_num_update``), the optax convention; an :mod:`mxopt.lr_scheduler`
    scheduler with that number plus one, MXNet's.

    Args:
      learning_rate: a float >= 0, a JAX scalar, or a schedule.
      lr_mult: per-parameter multipliers :math:`m` (see :mod:`mxopt.multipliers`).
      begin_num_update: the update count to start from (a resumed run).
    """
    v.check_learning_rate(learning_rate)
    count0 = _initial_count(begin_num_update)

    def init_fn(params):
        multipliers.resolve(lr_mult, params, "lr_mult")  # report bad names early
        return ScaleByLearningRateState(count=count0)

    def update_fn(updates, state, params=None):
        del params
        lrs = _learning_rates(learning_rate, state.count, lr_mult, updates)
        updates = jax.tree.map(lambda u, r: -_rounded(_hyper(r, u) * u), updates, lrs)
        return updates, ScaleByLearningRateState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


class GravesMomentumState(NamedTuple):
    """State of :func:`graves_momentum`: step count and the momentum buffer."""
    count: jax.Array
    delta: optax.Updates


def graves_momentum(learning_rate: ScalarOrSchedule, gamma2: Scalar = 0.9,
                    lr_mult: Any = None, begin_num_update: int = 0
                    ) -> optax.GradientTransformation:
    """Graves' momentum buffer with the learning rate *inside* it, as in MXNet.

    .. math::
        \\Delta \\leftarrow \\gamma_2 \\Delta - \\eta \\, u, \\qquad u \\leftarrow \\Delta

    Because :math:`\\eta` is folded into :math:`\\Delta`, a changed learning rate
    only affects new contributions, unlike ``optax.trace`` followed by a scale.

    Args:
      learning_rate: a float >= 0, a JAX scalar, or a schedule (counted as in
        :func:`scale_by_learning_rate`).
      gamma2: the momentum factor, in [0, 1).
      lr_mult: per-parameter multipliers of the learning rate.
      begin_num_update: the update count to start from (a resumed run).
    """
    v.check_learning_rate(learning_rate)
    v.check_scalar("gamma2", gamma2, low=0.0, high=1.0, high_open=True)
    count0 = _initial_count(begin_num_update)

    def init_fn(params):
        multipliers.resolve(lr_mult, params, "lr_mult")  # report bad names early
        return GravesMomentumState(count=count0,
                                   delta=optax.tree_utils.tree_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        lrs = _learning_rates(learning_rate, state.count, lr_mult, updates)
        delta = jax.tree.map(
            lambda u, d, r: _rounded(_hyper(gamma2, u) * d) - _rounded(_hyper(r, u) * u),
            updates, state.delta, lrs)
        return delta, GravesMomentumState(count=optax.safe_increment(state.count), delta=delta)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_lr_mult(lr_mult: Any) -> optax.GradientTransformation:
    """Multiply each leaf's update by its learning-rate multiplier, MXNet's
    ``lr_mult`` for any optax optimizer: ``optax.chain(optax.adam(1e-3),
    mxopt.scale_by_lr_mult({"*bias": 2.0}))``.

    Args:
      lr_mult: a multiplier specification (see :mod:`mxopt.multipliers`).
    """
    if lr_mult is None:
        raise TypeError("lr_mult must be a dict, a tree of floats or a callable, got None")

    def init_fn(params):
        multipliers.resolve(lr_mult, params, "lr_mult")  # report bad names early
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        mults = multipliers.resolve(lr_mult, updates, "lr_mult")
        return jax.tree.map(lambda u, m: u if m == 1.0 else _rounded(_hyper(m, u) * u),
                            updates, mults), state

    return optax.GradientTransformation(init_fn, update_fn)


def _ulp_step(x: jax.Array, down: jax.Array) -> jax.Array:
    """``nextafter(x, -inf)`` where ``down``, else ``nextafter(x, inf)``, for ``x``
    nonzero and not NaN: one step of the bit pattern, a few integer operations
    instead of ``jnp.nextafter``'s general case."""
    ints = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[jnp.dtype(x.dtype).itemsize]
    bits = jax.lax.bitcast_convert_type(x, ints)
    # Toward zero the magnitude (and so the bit pattern, sign apart) drops by one.
    step = jax.lax.select((x > 0) == down, jnp.full(x.shape, -1, ints), jnp.full(x.shape, 1, ints))
    return jax.lax.bitcast_convert_type(bits + step, x.dtype)


def _clipped_weight_update(w: jax.Array, u: jax.Array, bound: Scalar) -> jax.Array:
    """An update ``u'`` with ``w + u'`` equal to ``clip(w + u)``, or within one ulp
    of it and never outside ``[-bound, bound]``.

    ``w + (t - w)`` can round one ulp past ``t`` when ``t - w`` is inexact; such
    corrections are nudged one ulp back toward the interval.

    Written as compares and selects (no min/max, one integer step instead of
    ``jnp.nextafter``) because it runs on every element of every step.
    """
    b = _bound(bound, w)
    new = w + u
    above = new > b
    outside = above | (new < -b)
    fix = jax.lax.select(above, jnp.broadcast_to(b, new.shape),
                         jnp.broadcast_to(-b, new.shape)) - w
    landed = w + fix
    # landed is near the target, so it can only overshoot outward: past b when
    # above (step fix down), past -b below (step it up). fix is then nonzero
    # (w + 0 == w lands exactly).
    fix = jax.lax.select(jnp.abs(landed) > b, _ulp_step(fix, above), fix)
    if fix.dtype != u.dtype or fix.shape != u.shape:  # mixed dtypes: promote as ever
        return jnp.where(outside, fix, u)
    # lax.select rather than jnp.where: no nested call per leaf for XLA to inline.
    return jax.lax.select(outside, fix, u)


def clip_weights(bound: Optional[Scalar]) -> optax.GradientTransformation:
    """Keep weights in ``[-bound, bound]`` after ``optax.apply_updates``.

    Turns the incoming update ``u`` into ``clip(w + u) - w`` where ``w + u`` leaves
    the interval, and leaves it untouched elsewhere (so unclipped weights are
    bit-identical to an unclipped run). The bound holds exactly after
    ``optax.apply_updates``, despite rounding. ``None`` and ``0`` switch it off.
    Must be the last transformation before the update is applied.

    Args:
      bound: None, 0, or a finite number > 0.
    """
    v.check_scalar("clip_weights", bound, low=0.0, allow_none=True)

    def update_fn(updates, state, params=None):
        if _clip_is_static_off(bound):
            return updates, state
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format("clip_weights"))
        return jax.tree.map(lambda u, w: _clipped_weight_update(w, u, bound),
                            updates, params), state

    return optax.GradientTransformation(_empty_init, update_fn)
