"""MXNet 1.9.1's optimizer arithmetic: one pure per-leaf function per MXNet kernel.

Each kernel is ``kernel(grad, weight, *state, hp, finite) -> (update, *new_state)``
for one leaf, written in the C++ kernel's op order and grouping
(``src/operator/optimizer_op-inl.h`` at tag 1.9.1). ``hp`` maps hyperparameter
names to scalars: Python numbers (static) or JAX scalars (traced, e.g. under
``optax.inject_hyperparams``); ``hp["lr"]`` and ``hp["wd"]`` are already this
leaf's, after schedules and multipliers. ``finite`` is None, or a traced scalar
bool: where it is False the kernel returns the old state (``keep_if``), and the
engine zeroes the update. :mod:`mxopt.reference` is the NumPy twin of each
kernel, the ground truth of the tests.

The rest of this module is the rounding discipline every kernel shares. MXNet
rounds each hyperparameter to float32 (operator parameters are C++ floats),
casts it to the weight's dtype, and rounds every binary operation in that dtype.
Under ``jax.jit``, XLA and LLVM would change that rounding in three ways, each
blocked by a guard that moves no extra memory (README, "Numerics"):
``hyper`` (an optimization barrier on scalars), ``rounded`` (no FMA
contraction) and ``root`` (no ``x * rsqrt(y)`` rewrite).

Nothing here knows about trees, masking, schedules or state layout: that is
:mod:`mxopt._engine`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp

from mxopt import _mxnumbers as N
from mxopt import _validation as v

Scalar = Union[float, jax.Array]
Hyper = Mapping[str, Any]

__all__ = [
    "Scalar", "Hyper", "hyper", "tuple_hyper", "operand", "one_minus", "rounded", "root",
    "clip", "clip_is_static_off",
    "is_static", "rescale", "decay", "prepared_gradient", "mean_square", "mean",
    "centered_root", "keep_if", "update_if", "clipped_weight_update",
    "rmsprop_update", "rmspropalex_update",
]


# ----------------------------------------------------------------------------------
# Rounding guards
# ----------------------------------------------------------------------------------

def _is_python_number(value: Any) -> bool:
    # What MXNet's Python side computes in (floats are float64) and sends as str().
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _barrier(scalar: jax.Array) -> jax.Array:
    # The scalar goes through an optimization barrier so that XLA cannot treat a
    # static hyperparameter as a constant and reassociate around it: it rewrites
    # ``(5 * a) * (5 * a)`` as ``(a * a) * 25``, which rounds differently from MXNet.
    return jax.lax.optimization_barrier(scalar)


def hyper(value: Scalar, like: jax.Array) -> jax.Array:
    """``value`` as an MXNet kernel receives a C++ ``float`` operator field,
    cast to the leaf's dtype.

    A Python number is what MXNet's Python side computes and sends as
    ``str(value)``, parsed by dmlc-core's ``stof``, which is not always
    correctly rounded (:func:`mxopt._mxnumbers.kernel_float`): it is rounded
    exactly that way. A JAX or NumPy scalar (a traced hyperparameter, a
    scheduler's float32 table) is taken as float32.
    """
    if _is_python_number(value):
        value = N.received_float(value)
    return _barrier(jnp.asarray(value, dtype=jnp.float32).astype(like.dtype))


def tuple_hyper(value: Scalar, like: jax.Array) -> jax.Array:
    """:func:`hyper` for an entry of a ``Tuple<float>`` field (``multi_sgd_*``'s
    ``lrs``/``wds``), which ``std::istream`` parses correctly rounded."""
    if _is_python_number(value):
        value = N.tuple_float(value)
    return _barrier(jnp.asarray(value, dtype=jnp.float32).astype(like.dtype))


def operand(value: Scalar, like: jax.Array) -> jax.Array:
    """``value`` as the scalar of an NDArray scalar operator (``grad * s`` in
    MXNet's Python-side optimizers): a Python number is parsed as a C++ double
    (``dmlc::stod``) and cast once to the leaf's dtype; a JAX scalar is cast."""
    if _is_python_number(value):
        value = N.scalar_operand(value, like.dtype)
    return _barrier(jnp.asarray(value).astype(like.dtype))


def one_minus(value: Scalar, like: jax.Array) -> jax.Array:
    # The kernels compute (1.f - beta) in the weight's dtype, from the rounded beta.
    return (jnp.ones((), like.dtype) - hyper(value, like)).astype(like.dtype)


def rounded(product: jax.Array) -> jax.Array:
    """``product``, rounded on its own as MXNet's kernels round it.

    Under ``jax.jit`` LLVM contracts ``a * b + c`` into a fused multiply-add, which
    skips the product's rounding; a step of mxopt then differs from MXNet by an
    ulp here and there, and Graves' ``n - g_avg**2`` amplifies such ulps once the
    gradient is steady. ``max(p, lowest)`` equals ``p`` except that ``-inf``
    becomes the lowest finite value (an update that is NaN anyway), and LLVM
    cannot see through it, so the product is rounded and then added.
    """
    return jnp.maximum(product, jnp.asarray(jnp.finfo(product.dtype).min, product.dtype))


def root(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` that XLA keeps as a square root.

    XLA rewrites ``y / sqrt(x)`` as ``y * rsqrt(x)``, which differs from MXNet by
    an ulp in about 40% of elements. A ``reduce_precision`` to the dtype's own
    precision changes no value but stops that rewrite.
    """
    info = jnp.finfo(x.dtype)
    return jax.lax.reduce_precision(jnp.sqrt(x), exponent_bits=info.nexp,
                                    mantissa_bits=info.nmant)


def is_static(value: Any, target: float) -> bool:
    """Whether ``value`` is known at trace time to equal ``target``."""
    return value is not None and not v.is_traced(value) and v.static_value(value) == target


def clip_is_static_off(bound: Optional[Scalar]) -> bool:
    """Whether a clip bound is known at trace time to be off (None, 0)."""
    return bound is None or (not v.is_traced(bound) and not v.static_value(bound) > 0)


def _bound(bound: Scalar, like: jax.Array) -> jax.Array:
    """A clip bound as MXNet passes it, with a traced bound that is not > 0 (off)
    replaced by infinity: clipping to [-inf, inf] changes nothing, NaN included.

    Deciding on the scalar rather than selecting between clipped and unclipped
    arrays keeps the per-element work the same as for a static bound, and keeps
    XLA from materialising the clipped gradient (a select between two arrays is
    not cheap to duplicate into the step's two output fusions).
    """
    b = hyper(bound, like)
    if v.is_traced(bound):
        b = jax.lax.select(b > 0, b, jnp.asarray(jnp.inf, b.dtype))
    return b


def clip(x: jax.Array, bound: Optional[Scalar]) -> jax.Array:
    """MXNet's elementwise clip to [-bound, bound], on only when ``bound > 0``
    (None and 0 switch it off, as in the kernel optimizers). NaN passes through."""
    if clip_is_static_off(bound):
        return x
    b = _bound(bound, x)
    return jnp.minimum(jnp.maximum(x, -b), b)


def rescale(g: jax.Array, rescale_grad: Scalar) -> jax.Array:
    # Multiplying by a static 1.0 is exact; skip it to save a pass.
    return g if is_static(rescale_grad, 1.0) else rounded(hyper(rescale_grad, g) * g)


def decay(g: jax.Array, w: jax.Array, wd: Scalar) -> jax.Array:
    # g + 0 * w == g for finite weights; a static zero skips reading w.
    return g if is_static(wd, 0.0) else g + rounded(hyper(wd, g) * w)


def prepared_gradient(grad: jax.Array, weight: jax.Array, hp: Hyper) -> jax.Array:
    """``clip(rescale_grad * grad + wd * weight, clip_gradient)``: the prologue of
    the kernels that add the decay before clipping (RMSProp, Adam, FTML)."""
    g = decay(rescale(grad, hp["rescale_grad"]), weight, hp["wd"])
    return clip(g, hp["clip_gradient"])


def mean_square(g: jax.Array, n: jax.Array, gamma1: Scalar, *, centered: bool) -> jax.Array:
    """``(1 - gamma1) * g^2 + gamma1 * n``, grouped as the plain kernel
    (``(1 - gamma1) * (g * g)``) or the centered one (``((1 - gamma1) * g) * g``)."""
    one_minus_gamma1, gamma1 = one_minus(gamma1, g), hyper(gamma1, g)
    if centered:
        return rounded(one_minus_gamma1 * g * g) + rounded(gamma1 * n)
    return rounded(one_minus_gamma1 * (g * g)) + rounded(gamma1 * n)


def mean(g: jax.Array, g_avg: jax.Array, gamma1: Scalar) -> jax.Array:
    """``(1 - gamma1) * g + gamma1 * g_avg``."""
    return rounded(one_minus(gamma1, g) * g) + rounded(hyper(gamma1, g) * g_avg)


def centered_root(n: jax.Array, g_avg: jax.Array, epsilon: Scalar) -> jax.Array:
    # n - g_avg**2 cancels catastrophically once the gradient is steady (e.g.
    # clipped), so an FMA here (exact product) would move the result far from
    # MXNet's rounded product. max(p, 0) == p for a square, and it stands between
    # the multiply and the subtract so LLVM cannot contract them.
    square = jnp.maximum(g_avg * g_avg, jnp.zeros((), g_avg.dtype))
    return root(n - square + hyper(epsilon, n))


# ----------------------------------------------------------------------------------
# Skipping a step (skip_nonfinite) and clipping the weights
# ----------------------------------------------------------------------------------

def keep_if(finite: Optional[jax.Array], new: jax.Array, old: jax.Array) -> jax.Array:
    """``new`` where ``finite`` (or when it is None), else ``old``: an elementwise
    choice XLA fuses into the loop computing ``new``, where a ``lax.cond`` would
    be a fusion boundary that materialises its result."""
    if finite is None:
        return new
    if jnp.result_type(new) != jnp.result_type(old) or jnp.shape(new) != jnp.shape(old):
        return jnp.where(finite, new, old)  # mixed dtypes: promote as ever
    return jax.lax.select(finite, new, old)


def update_if(finite: Optional[jax.Array], update: jax.Array) -> jax.Array:
    """``update`` where ``finite``, else a zero update."""
    return keep_if(finite, update, jnp.zeros_like(update))


def _ulp_step(x: jax.Array, down: jax.Array) -> jax.Array:
    """``nextafter(x, -inf)`` where ``down``, else ``nextafter(x, inf)``, for ``x``
    nonzero and not NaN: one step of the bit pattern, a few integer operations
    instead of ``jnp.nextafter``'s general case."""
    ints = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[jnp.dtype(x.dtype).itemsize]
    bits = jax.lax.bitcast_convert_type(x, ints)
    # Toward zero the magnitude (and so the bit pattern, sign apart) drops by one.
    # Arithmetic on the comparison, not a select between broadcast constants:
    # those would be unsharded operands on a mesh with explicit axes.
    step = (1 - 2 * ((x > 0) == down).astype(ints)).astype(ints)
    return jax.lax.bitcast_convert_type(bits + step, x.dtype)


def clipped_weight_update(w: jax.Array, u: jax.Array, bound: Scalar) -> jax.Array:
    """An update ``u'`` with ``w + u'`` equal to ``clip(w + u)``, or within one ulp
    of it and never outside ``[-bound, bound]``.

    ``w + (t - w)`` can round one ulp past ``t`` when ``t - w`` is inexact; such
    corrections are nudged one ulp back toward the interval.

    Written as compares and selects between arrays shaped (and sharded) like
    ``w`` (no min/max, one integer step instead of ``jnp.nextafter``) because it
    runs on every element of every step.
    """
    b = _bound(bound, w)
    new = w + u
    above = new > b
    outside = above | (new < -b)
    # The target is b above the interval and -b below it: copysign(b, new).
    fix = jnp.copysign(b, new) - w
    landed = w + fix
    # landed is near the target, so it can only overshoot outward: past b when
    # above (step fix down), past -b below (step it up). fix is then nonzero
    # (w + 0 == w lands exactly).
    fix = jax.lax.select(jnp.abs(landed) > b, _ulp_step(fix, above), fix)
    if fix.dtype != u.dtype or fix.shape != u.shape:  # mixed dtypes: promote as ever
        return jnp.where(outside, fix, u)
    # lax.select rather than jnp.where: no nested call per leaf for XLA to inline.
    return jax.lax.select(outside, fix, u)


# ----------------------------------------------------------------------------------
# The kernels
# ----------------------------------------------------------------------------------

def rmsprop_update(grad: jax.Array, weight: jax.Array, n: jax.Array, hp: Hyper,
                   finite: Optional[jax.Array] = None):
    """``rmsprop_update`` (Tieleman & Hinton)::

        g = clip(rescale_grad * grad + wd * weight, clip_gradient)
        n = (1 - gamma1) * (g * g) + gamma1 * n
        update = -(lr * (g / sqrt(n + epsilon)))

    Returns ``(update, n)``.
    """
    g = prepared_gradient(grad, weight, hp)
    n = keep_if(finite, mean_square(g, n, hp["gamma1"], centered=False), n)
    # -(lr * x) added to w is exactly MXNet's w - lr * x. The update is computed
    # from the chosen n, so the loop writing w reads the buffer the loop writing
    # n wrote (in place) rather than the old n it overwrote.
    return -rounded(hyper(hp["lr"], g) * (g / root(n + hyper(hp["epsilon"], g)))), n


def rmspropalex_update(grad: jax.Array, weight: jax.Array, n: jax.Array, g_avg: jax.Array,
                       delta: jax.Array, hp: Hyper, finite: Optional[jax.Array] = None):
    """``rmspropalex_update`` (Graves 2013, eq. 38-45, centered)::

        g = clip(rescale_grad * grad + wd * weight, clip_gradient)
        n = ((1 - gamma1) * g) * g + gamma1 * n
        g_avg = (1 - gamma1) * g + gamma1 * g_avg
        delta = gamma2 * delta - (lr * g) / sqrt(n - g_avg * g_avg + epsilon)
        update = delta

    Returns ``(update, n, g_avg, delta)``.
    """
    g = prepared_gradient(grad, weight, hp)
    n = keep_if(finite, mean_square(g, n, hp["gamma1"], centered=True), n)
    g_avg = keep_if(finite, mean(g, g_avg, hp["gamma1"]), g_avg)
    # (lr * g) / root: the centered kernel's grouping, unlike the plain one.
    delta = keep_if(finite, rounded(hyper(hp["gamma2"], g) * delta)
                    - hyper(hp["lr"], g) * g / centered_root(n, g_avg, hp["epsilon"]), delta)
    return delta, n, g_avg, delta
