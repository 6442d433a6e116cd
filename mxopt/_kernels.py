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

import contextlib
import functools
import math
import threading
from typing import Any, Callable, Mapping, Optional, Union

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np

from mxopt import _mxnumbers as N
from mxopt import _validation as v

Scalar = Union[float, jax.Array]
Hyper = Mapping[str, Any]

__all__ = [
    "Scalar", "Hyper", "hyper", "sharing_hypers", "share_hypers", "tuple_hyper", "operand",
    "one_minus", "rounded", "root",
    "clip", "clip_is_static_off", "nan_or_zero", "divide", "guard_constants",
    "is_static", "rescale", "decay", "prepared_gradient", "mean_square", "mean",
    "centered_root", "keep_if", "update_if", "clipped_weight_update", "apart", "after",
    "own_loop", "own_kernel", "stored_weight",
    "adam_fold", "adamax_fold", "ftml_fold", "nadam_advance", "python_clip",
    "python_prepared_gradient", "adam_update", "adamax_update", "nadam_update", "ftrl_update",
    "ftrl_weight", "ftml_update", "ftml_weight",
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
    exactly that way (the step's shared scalar, where :func:`share_hypers`
    made one). A JAX or NumPy scalar (a traced hyperparameter, a scheduler's
    float32 table) is taken as float32.
    """
    return _derived("", value, like)


def one_minus(value: Scalar, like: jax.Array) -> jax.Array:
    """``1 - hyper(value, like)``, computed in the leaf's dtype as the kernels
    compute ``(1.f - beta)`` from the rounded ``beta``."""
    return _derived("1-", value, like)


# Scalars derived from a hyperparameter. For a Python number the arithmetic is
# done on the host, in the leaf's dtype (IEEE negation and subtraction, as the
# device does them), so the kernel reads a constant: XLA does not fold scalar
# arithmetic on an optimization barrier's result, and every loop that reads
# ``-bound`` or ``1 - beta`` would compute it again (and keep a max and a min
# that it would otherwise make one clamp).
_DERIVED = {"": lambda x: x, "-": lambda x: -x, "1-": lambda x: np.asarray(1, x.dtype) - x}


def _derived(tag: str, value: Scalar, like: jax.Array) -> jax.Array:
    if _is_python_number(value):
        pools = _SHARED.stack
        shared = pools[-1].get((tag,) + _shared_key(value, like)) if pools else None
        if shared is not None:
            return shared
        return _barrier(jnp.asarray(_DERIVED[tag](_received(value, like.dtype))))
    # A traced value: the same arithmetic, on the device.
    return _DERIVED[tag](_barrier(jnp.asarray(value, dtype=jnp.float32).astype(like.dtype)))


def _received(value: Any, dtype: Any) -> np.ndarray:
    # The float32 a kernel's float field receives, cast to the leaf's dtype.
    return np.asarray(N.received_float(value), np.float32).astype(dtype)


class _Pools(threading.local):
    # The step's shared hyperparameters, {(tag, str(value), dtype): scalar}, innermost
    # last; per thread, as jax traces are (a step traced on another thread at the
    # same time must not read this trace's scalars).
    def __init__(self):
        super().__init__()
        self.stack = []


_SHARED = _Pools()


def _shared_key(value: Any, like: jax.Array) -> tuple:
    # str(value) is what MXNet parses (and tells -0.0 from 0.0, unlike ==).
    return (str(value), jnp.dtype(like.dtype))


@contextlib.contextmanager
def sharing_hypers():
    """A step's scope for :func:`share_hypers`.

    Every leaf's kernel reads the same few static hyperparameters, and each
    read would otherwise be a constant and a barrier of its own in every
    leaf's loop: thousands of instructions on a model's tree that XLA's passes
    walk one by one before the barriers go (BENCHMARKS.md, "Issue 14:
    compile time, 2026-12-01"). Shared, each value is one barrier per step
    and dtype, which the per-leaf functions close over (``jax.jit`` makes a
    closed-over value of the enclosing trace an argument). The values, and
    what XLA may do with them, are the same.
    """
    _SHARED.stack.append({})
    try:
        yield
    finally:
        _SHARED.stack.pop()


def share_hypers(values, like: jax.Array) -> None:
    """Make :func:`hyper` of each Python number in ``values``, for leaves of
    ``like``'s dtype, one scalar for the rest of the :func:`sharing_hypers`
    scope (nothing outside one), and likewise its negation (a clip's lower
    bound) and :func:`one_minus`. Call it where the scope was entered, in the
    step's own trace: a scalar made inside a per-leaf trace cannot be shared."""
    if not _SHARED.stack:
        return
    shared = _SHARED.stack[-1]
    for value in values:
        if _is_python_number(value) and math.isfinite(value):
            key = _shared_key(value, like)
            if ("",) + key not in shared:
                received = _received(value, like.dtype)
                for tag, derive in _DERIVED.items():
                    shared[(tag,) + key] = _barrier(jnp.asarray(derive(received)))


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


def rounded(product: jax.Array, lowest: Optional[jax.Array] = None) -> jax.Array:
    """``product``, rounded on its own as MXNet's kernels round it.

    Under ``jax.jit`` LLVM contracts ``a * b + c`` into a fused multiply-add, which
    skips the product's rounding; a step of mxopt then differs from MXNet by an
    ulp here and there, and Graves' ``n - g_avg**2`` amplifies such ulps once the
    gradient is steady. ``max(p, lowest)`` equals ``p`` except that ``-inf``
    becomes the lowest finite value (an update that is NaN anyway), and LLVM
    cannot see through it, so the product is rounded and then added.
    ``lowest``: that constant, from :func:`guard_constants` (default: its own).
    """
    if lowest is None:
        lowest = jnp.asarray(jnp.finfo(product.dtype).min, product.dtype)
    return jnp.maximum(product, lowest)


def root(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` that XLA keeps as a square root.

    XLA rewrites ``y / sqrt(x)`` as ``y * rsqrt(x)``, which differs from MXNet by
    an ulp in about 40% of elements. A ``reduce_precision`` to the dtype's own
    precision changes no value but stops that rewrite.
    """
    info = jnp.finfo(x.dtype)
    return jax.lax.reduce_precision(jnp.sqrt(x), exponent_bits=info.nexp,
                                    mantissa_bits=info.nmant)


def nan_or_zero(x: jax.Array, zero: Optional[jax.Array] = None) -> jax.Array:
    """``min(|x|, 0)``: +0 for every ``x`` (infinities included) and NaN where
    ``x`` is NaN, an expression of ``x``'s elements that XLA does not fold. Added
    to a value, it changes no number but ties the value to ``x``: its shape and
    sharding (no broadcast constant), and its NaNs. ``zero``: the 0 to compare
    with, from :func:`guard_constants` (default: its own)."""
    if zero is None:
        zero = jnp.zeros((), x.dtype)
    return jnp.minimum(jnp.abs(x), zero)


def divide(x: jax.Array, scalar: jax.Array, zero: Optional[jax.Array] = None) -> jax.Array:
    """``x / scalar`` that XLA keeps as a division.

    XLA rewrites a division by a broadcast scalar as a multiplication by its
    reciprocal, which differs from MXNet's division by an ulp in some
    elements. ``min(|x|, 0)`` is +0 for every ``x`` but NaN (where the quotient
    is NaN either way), so ``scalar + min(|x|, 0)`` is ``scalar`` yet no
    broadcast: the division stays, fused in the same loop, and the divisor is
    sharded like ``x`` (a select against a broadcast constant would not be, on
    a mesh with explicit axes). ``zero``: that 0, from :func:`guard_constants`
    (default: its own).
    """
    return x / (scalar + nan_or_zero(x, zero))


def guard_constants(like: jax.Array) -> dict:
    """The constants of :func:`rounded` (``lowest``) and :func:`divide`
    (``zero``) in ``like``'s dtype, for an expression that a reduction takes in
    (LAMB's ``u``), which gets every scalar it reads through :func:`apart`.

    XLA:CPU hands a large reduction to a YNNPACK fusion, which takes in a
    producer only when nothing else reads it, and XLA shares one broadcast of a
    scalar among every loop that uses it (the rest of the step's guards): the
    reduction's would be written to memory at the array's size. Scalars that
    leave an optimization barrier of this expression's own are broadcast for
    it alone.
    """
    return dict(lowest=jnp.asarray(jnp.finfo(like.dtype).min, like.dtype),
                zero=jnp.zeros((), like.dtype))


def is_static(value: Any, target: float) -> bool:
    """Whether ``value`` is known at trace time to equal ``target``."""
    return value is not None and not v.is_traced(value) and v.static_value(value) == target


def clip_is_static_off(bound: Optional[Scalar]) -> bool:
    """Whether a clip bound is known at trace time to be off (None, 0)."""
    return bound is None or (not v.is_traced(bound) and not v.static_value(bound) > 0)


def _bounds(bound: Scalar, like: jax.Array) -> tuple:
    """``(-b, b)`` for a clip bound ``b`` as MXNet passes it, with a traced bound
    that is not > 0 (off) replaced by infinity: clipping to [-inf, inf] changes
    nothing, NaN included.

    Deciding on the scalar rather than selecting between clipped and unclipped
    arrays keeps the per-element work the same as for a static bound, and keeps
    XLA from materialising the clipped gradient (a select between two arrays is
    not cheap to duplicate into the step's two output fusions).
    """
    if v.is_traced(bound):
        b = hyper(bound, like)
        b = jax.lax.select(b > 0, b, jnp.asarray(jnp.inf, b.dtype))
        return -b, b
    return _derived("-", bound, like), hyper(bound, like)


def clip(x: jax.Array, bound: Optional[Scalar]) -> jax.Array:
    """MXNet's elementwise clip to [-bound, bound], on only when ``bound > 0``
    (None and 0 switch it off, as in the kernel optimizers). NaN passes through."""
    if clip_is_static_off(bound):
        return x
    lo, hi = _bounds(bound, x)
    return jax.lax.clamp(lo, x, hi)


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


def _float_step_dtype(dtype, bound: Scalar):
    """The dtype in which :func:`clipped_weight_update` steps a correction by
    float arithmetic, or None where it steps the bit pattern.

    Subtracting ``sign(t) * c * |fix|`` with ``c = 1.25 * 2**-p`` (``p`` the
    precision of ``dtype``; the sign and ``c`` come as ``t * (c / b)``) moves
    ``fix`` by 5/8 to 5/4 of its ulp, which rounds to exactly one ulp, with or
    without an FMA: the same value as the bit step, in four float operations
    where the bit step takes five integer ones and three bitcasts (each is
    inlined into every leaf's loop, and compile time grows with them:
    BENCHMARKS.md, "what exact weight clipping costs"). It is the same only
    where ``c * |fix|`` is a normal number and ``fix`` is finite,
    so it is used for a static bound that keeps both:

    * an overshoot needs an inexact ``t - w``, so ``|fix| >= b / 2``: a bound
      above ``tiny * 2**(p + 3)`` keeps ``c * |fix|`` normal (XLA:CPU flushes
      subnormal results to zero, and a zero step would leave the overshoot);
    * ``|w| + b`` rounds to at most the largest float while ``b`` is under half
      its ulp: a bound under a quarter of it keeps ``t - w`` finite (where it
      overflows, the bit step gives the largest float and the float step NaN),
      and ``c / b`` normal.

    float16 steps in float32, where its ``c * |fix|`` is normal for every
    bound, and rounds once. bfloat16 keeps the bit step: XLA:CPU computes
    bfloat16 in float32 between operations (excess precision), and only the
    bitcast pins ``fix`` to bfloat16 before it is stepped.
    """
    dtype = jnp.dtype(dtype)
    wide = {jnp.dtype(jnp.float16): jnp.dtype(jnp.float32)}.get(dtype, dtype)
    if v.is_traced(bound) or dtype not in (jnp.float16, jnp.float32, jnp.float64):
        return None
    b, info = abs(float(v.static_value(bound))), jnp.finfo(dtype)
    if float(jnp.finfo(wide).tiny) * 2.0 ** (info.nmant + 4) <= b <= (
            float(info.max) * 2.0 ** -(info.nmant + 3)):
        return wide
    return None


def clipped_weight_update(w: jax.Array, u: jax.Array, bound: Scalar) -> jax.Array:
    """An update ``u'`` with ``w + u'`` equal to ``clip(w + u)``, or within one ulp
    of it and never outside ``[-bound, bound]``.

    Where ``w + u`` leaves the interval, the correction is ``t - w`` for the
    target ``t = copysign(bound, w + u)``. ``w + (t - w)`` can round one ulp past
    ``t`` when ``t - w`` is inexact (never inward past it: it lands near ``t``),
    and such corrections are stepped one ulp back toward the interval: toward
    zero where the correction has the target's sign, away from it otherwise.
    Elsewhere, NaN included, ``u`` is returned unchanged.

    It runs on every element of every step and is inlined into every leaf's
    loop, so it is written as few primitives as it takes (compile time grows
    with them: BENCHMARKS.md, "Issue 14: compile time"): the target is
    ``new`` clamped, and the ulp step is float arithmetic where that gives the
    same value (:func:`_float_step_dtype`), else -1 or +1 added to the bit
    pattern, its direction a sign bit. Every operand is an array shaped (and
    sharded) like ``w`` or a scalar: no select between broadcast constants,
    which would be an unsharded operand on a mesh with explicit axes.
    """
    lo, b = _bounds(bound, w)
    if w.dtype != u.dtype or jnp.shape(w) != jnp.shape(u):  # mixed: promote as ever
        dtype, shape = jnp.result_type(w, u), jnp.broadcast_shapes(jnp.shape(w), jnp.shape(u))
        w, u = (jnp.broadcast_to(jnp.asarray(x, dtype), shape) for x in (w, u))
        lo, b = lo.astype(dtype), b.astype(dtype)
    lax = jax.lax
    new = lax.add(w, u)
    outside = lax.gt(lax.abs(new), b)
    # Where new is outside, clamping it gives the target copysign(b, new), and
    # the target's sign is new's.
    target = lax.clamp(lo, new, b)
    fix = lax.sub(target, w)
    wide = _float_step_dtype(w.dtype, bound)
    if wide is not None:
        # target * (c / bound) is +-c, to a rounding or two that leave c * |fix|
        # well inside (1/2, 3/2) of fix's ulp; a sign() would cost more (it
        # handles zeros and NaN), which shows in the scalar loops of MXNet's layout.
        per_bound = np.asarray(1.25 * 2.0 ** -(jnp.finfo(w.dtype).nmant + 1)
                               / abs(float(v.static_value(bound))), wide)
        toward = lax.mul(lax.convert_element_type(target, wide), per_bound)
        wide_fix = lax.convert_element_type(fix, wide)
        stepped = lax.convert_element_type(
            lax.sub(wide_fix, lax.mul(toward, lax.abs(wide_fix))), w.dtype)
    else:
        ints = {2: np.int16, 4: np.int32, 8: np.int64}[jnp.dtype(w.dtype).itemsize]
        fix_bits = lax.bitcast_convert_type(fix, ints)
        # (fix ^ new) >> (width - 1) is 0 where fix has the target's sign and -1
        # where it has the other; | 1 makes that -1 or +1, subtracted from fix's bits.
        away = lax.shift_right_arithmetic(
            lax.bitwise_xor(fix_bits, lax.bitcast_convert_type(new, ints)),
            ints(8 * np.dtype(ints).itemsize - 1))
        stepped = lax.bitcast_convert_type(lax.sub(fix_bits, lax.bitwise_or(away, ints(1))),
                                           w.dtype)
    fix = lax.select(lax.gt(lax.abs(lax.add(w, fix)), b), stepped, fix)
    return lax.select(outside, fix, u)


# ----------------------------------------------------------------------------------
# Loop structure: no parameter-sized temporaries in a jitted, donated step
# ----------------------------------------------------------------------------------
#
# XLA:CPU writes each output of a step (the new weight, each new state buffer)
# with its own loop, and orders those loops only by data dependence. A donated
# buffer is overwritten in place by the loop writing its new value, so a
# kernel must be written such that
#
# * every other loop that reads the *old* value of a buffer comes first, by
#   data dependence: the loop writing the new value reads one of that loop's
#   outputs (``after``, or a value MXNet itself computes from it). Otherwise XLA
#   copies the old buffer first (a parameter-sized temporary, two passes);
# * a value that is expensive to compute (a division, a square root) and needed
#   by two loops is computed by each from its inputs rather than shared
#   (``apart``): XLA does not duplicate expensive operations into two loops, so
#   a shared one is written to a parameter-sized temporary and read back.
#
# Neither changes a value. tests/test_step_structure.py checks the result.


def apart(*arrays: jax.Array):
    """``arrays``, unchanged, as values XLA cannot identify with ``arrays``.

    An expression computed once from ``arrays`` and once from ``apart(arrays)``
    is two expressions to XLA's common-subexpression elimination, so each of
    two loops computes its own copy instead of sharing one through memory. An
    optimization barrier on arrays that are already in memory (state buffers,
    new state values that are outputs anyway) moves nothing. Never pass it a
    value computed in the step that is not an output (the gradient cast to
    float32 under master weights, a clipped gradient): a barrier's operands are
    materialized. Scalars cost nothing, and a cast that XLA folds away is the
    array it casts (the float32 gradient cast back to its stored float16:
    :func:`sum_of_squares`).
    """
    return jax.lax.optimization_barrier(arrays)


def after(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x``, computed in a loop that reads ``y`` (so after the loop writing ``y``).

    ``y > inf`` is false for every ``y``, NaN included, so this is ``x``; XLA
    cannot see that, so the loop writing ``x`` reads ``y`` (one pass over ``y``)
    and runs after the loop that writes ``y``. Used where the loop writing a new
    state buffer would otherwise be unordered with another loop that still
    reads the buffer's old value: that costs XLA:CPU a copy of the old buffer
    (one read and one write, and a parameter-sized temporary) instead.
    """
    return jax.lax.select(y > jnp.asarray(jnp.inf, y.dtype), y, x)


def own_loop(x: jax.Array) -> jax.Array:
    """``x``, as an expression of more than one operation.

    Where the update is a new state buffer itself (SGD's momentum, centered
    RMSProp's ``delta``), the new weight's loop is a lone ``w + u``, and XLA:CPU
    emits a loop of a single elementwise operation with another emitter than
    its fusions: serial and not unrolled, about 1.35x the time of the same add
    in a fusion on a 25M-element leaf (measured). ``x > inf`` is false for every
    ``x``, NaN included, so ``select(x > inf, -x, x)`` is ``x``, and the loop is
    an ordinary fusion.
    """
    return jax.lax.select(x > jnp.asarray(jnp.inf, x.dtype), -x, x)


def own_kernel(x: jax.Array) -> jax.Array:
    """``x``, a scalar, computed by a kernel of its own instead of inside every
    loop that reads it.

    XLA fuses cheap scalar arithmetic into each consumer. Where a chain of
    scalars runs through the leaves (Nadam's shared ``m_schedule``: each
    leaf's is the previous one's times ``momentum_t``), every leaf's loop then
    recomputes the chain so far: code that grows with the square of the leaf
    count, and leaf loops that differ from leaf to leaf, whereas XLA:CPU
    compiles identical kernels once. ``x / (1 + min(|x|, 0))`` is ``x`` (NaN
    stays NaN) and XLA does not duplicate a division into several consumers,
    so each link is a small kernel, the same for every link, and the loops
    read the scalar as a parameter (ResNet-50's Nadam compiled in 4x optax's
    time; BENCHMARKS.md, issue 17).
    """
    return divide(x, jnp.ones((), x.dtype))


def stored_weight(weight: jax.Array, update: jax.Array,
                  finite: Optional[jax.Array]) -> jax.Array:
    """The weight the step writes: ``weight + update``, the update zeroed on a
    skipped step, which is what the engine returns and ``optax.apply_updates``
    adds (with master weights, what ``master_weights`` adds to the master). The
    expression is the same as theirs, so XLA computes it once, as the new
    weight's output, and a kernel that reads it reads that output. None of the
    optimizers that read it takes ``clip_weights``, the engine's only other
    change to the update."""
    return weight + update_if(finite, update)


# ----------------------------------------------------------------------------------
# The kernels
# ----------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------
# Adam, Adamax, Nadam, Ftrl, FTML
# ----------------------------------------------------------------------------------
#
# MXNet computes some scalars on the host from the update count ``t`` before
# calling its kernel (Adam's and Adamax's bias corrections, Nadam's momentum
# schedule) or inside the kernel (FTML's powers). The engine hands ``hp["t"]``
# over as a Python int outside ``jax.jit`` and as a traced int32 under it: the
# host values below are then MXNet's own float64 arithmetic (and, through
# ``hyper``/``operand``, MXNet's parsing of them); the device values are the same
# formulas in float64 where ``jax_enable_x64`` is on (float32 otherwise), rounded
# to float32 correctly instead of by dmlc's parser, so a jitted step can differ
# from MXNet by an ulp of such a scalar (README, "Numerics").

def _host_scalars(*values) -> bool:
    """Whether every value is known on the host (no tracer): then MXNet's
    Python-side float64 arithmetic can be done exactly, in Python."""
    return not any(v.is_traced(x) for x in values)


def _as_host(x: Any) -> Any:
    # A concrete JAX/NumPy scalar as a Python number; Python numbers unchanged.
    return x if _is_python_number(x) else float(np.asarray(x))


def _device_float():
    # float64 where x64 is on (as MXNet's Python floats), else float32.
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def adam_fold(hp: Hyper) -> dict:
    """``lr * (sqrt(1 - beta2**t) / (1 - beta1**t))``, MXNet's Adam bias
    correction folded into the rate (Python float64 on the host), before the
    kernel parses it. Epsilon is not corrected."""
    t, lr, b1, b2 = hp["t"], hp["lr"], hp["beta1"], hp["beta2"]
    if _host_scalars(t, lr, b1, b2):
        lr, b1, b2 = _as_host(lr), _as_host(b1), _as_host(b2)
        return dict(hp, lr=lr * (math.sqrt(1. - b2 ** t) / (1. - b1 ** t)))
    f = _device_float()
    tf, b1, b2 = jnp.asarray(t, f), jnp.asarray(b1, f), jnp.asarray(b2, f)
    return dict(hp, lr=jnp.asarray(lr, f) * (jnp.sqrt(1. - b2 ** tf) / (1. - b1 ** tf)))


def adamax_fold(hp: Hyper) -> dict:
    """``lr / (1 - beta1**t)``, MXNet's Adamax bias correction, and the operand
    ``1 - beta1`` (both Python float64 on the host)."""
    t, lr, b1 = hp["t"], hp["lr"], hp["beta1"]
    if _host_scalars(t, lr, b1):
        b1 = _as_host(b1)
        return dict(hp, lr=_as_host(lr) / (1. - b1 ** t), one_minus_beta1=1. - b1)
    f = _device_float()
    b1 = jnp.asarray(b1, f)
    return dict(hp, lr=jnp.asarray(lr, f) / (1. - b1 ** jnp.asarray(t, f)),
                one_minus_beta1=1. - b1)


def ftml_fold(hp: Hyper) -> dict:
    """FTML's ``beta1**t`` and ``beta2**t`` (``beta1_t``, ``beta2_t``): C's float32
    ``powf`` of the parsed betas, as ``ftml_update`` computes them. On the host
    they are libm's ``powf``; on device a float64 power rounded to float32 (a
    float32 ``jnp.power`` without x64), which can differ from ``powf`` in the last
    bit. MXNet computes them in the weight's dtype; here they are float32 for
    every leaf dtype."""
    t, b1, b2 = hp["t"], hp["beta1"], hp["beta2"]
    if _host_scalars(t, b1, b2):
        parsed = [N.received_float(b) if _is_python_number(b) else np.float32(b)
                  for b in (b1, b2)]
        return dict(hp, beta1_t=N.powf(parsed[0], np.float32(t)),
                    beta2_t=N.powf(parsed[1], np.float32(t)))
    f = _device_float()

    def power(b):
        b = jnp.asarray(N.received_float(b) if _is_python_number(b) else b, jnp.float32)
        return (b.astype(f) ** jnp.asarray(t, jnp.float32).astype(f)).astype(jnp.float32)

    return dict(hp, beta1_t=power(b1), beta2_t=power(b2))


def nadam_advance(m_schedule: Any, hp: Hyper):
    """One Nadam update call's schedule scalars and the new ``m_schedule``
    (MXNet's optimizer-wide Python float, multiplied on every update call of
    every parameter)::

        momentum_t   = beta1 * (1 - 0.5 * 0.96**(t * schedule_decay))
        momentum_t_1 = beta1 * (1 - 0.5 * 0.96**((t + 1) * schedule_decay))
        m_schedule   = m_schedule * momentum_t
        m_schedule_next = m_schedule * momentum_t_1

    Returns ``(hp_additions, m_schedule)``; the additions are the kernel's
    scalar operands ``1 - momentum_t``, ``momentum_t_1``, ``1 - m_schedule``,
    ``1 - m_schedule_next``, ``1 - beta2**t``, ``1 - beta1`` and ``1 - beta2``,
    in Python float64 on the host.
    """
    t, b1, b2, sd = hp["t"], hp["beta1"], hp["beta2"], hp["schedule_decay"]
    if _host_scalars(t, b1, b2, sd, m_schedule):
        b1, b2, sd, m_schedule = (_as_host(x) for x in (b1, b2, sd, m_schedule))
        power, one = pow, 1.
    else:
        f = _device_float()
        b1, b2, sd, m_schedule = (jnp.asarray(x, f) for x in (b1, b2, sd, m_schedule))
        t, power, one = jnp.asarray(t, f), jnp.power, jnp.ones((), f)
    momentum_t = b1 * (one - 0.5 * (power(0.96, t * sd)))
    momentum_t_1 = b1 * (one - 0.5 * (power(0.96, (t + 1) * sd)))
    m_schedule = m_schedule * momentum_t
    if not _is_python_number(m_schedule):
        # On device (under a trace) each leaf's m_schedule is the previous leaf's times
        # momentum_t: one link of a chain through every leaf (loop structure).
        m_schedule = own_kernel(m_schedule)
    m_schedule_next = m_schedule * momentum_t_1
    return dict(one_minus_momentum_t=one - momentum_t, momentum_t_1=momentum_t_1,
                one_minus_schedule=one - m_schedule,
                one_minus_schedule_next=one - m_schedule_next,
                one_minus_beta2_t=one - power(b2, t), one_minus_beta1=one - b1,
                one_minus_beta2=one - b2), m_schedule


def python_clip(x: jax.Array, bound: Optional[Scalar]) -> jax.Array:
    """The NDArray ``clip(x, -bound, bound)`` of MXNet's Python-side optimizers,
    applied whenever ``bound is not None`` (so 0 clips to +-0: negative values
    become -0.0, as ``str(-0.0)`` parses). NaN passes through."""
    if bound is None:
        return x
    if _is_python_number(bound):
        lo, hi = hyper(-bound, x), hyper(bound, x)
    else:
        hi = hyper(bound, x)
        lo = -hi
    if not v.is_traced(bound) and v.static_value(bound) > 0:
        # The same values (lo < 0 < hi, so no tie between zeros; NaN passes
        # through min and max), but XLA:CPU duplicates min/max into every loop
        # reading the clipped gradient, whereas it wrote the select chain to a
        # parameter-sized temporary (AdaGrad's g * g reads it twice).
        return jnp.minimum(jnp.maximum(x, lo), hi)
    return jnp.where(x > hi, hi, jnp.where(x < lo, lo, x))


def python_rescale(grad: jax.Array, rescale_grad: Scalar) -> jax.Array:
    """``grad * rescale_grad`` as an NDArray scalar operator (the scalar an
    :func:`operand`); a static 1.0 is exact and skipped."""
    if is_static(rescale_grad, 1.0):
        return grad
    return rounded(grad * operand(rescale_grad, grad))


def python_prepared_gradient(grad: jax.Array, weight: jax.Array, hp: Hyper) -> jax.Array:
    """``clip(grad * rescale_grad + wd * weight)`` as NDArray operators (each
    scalar an :func:`operand`, each operation rounded), the prologue of MXNet's
    Python-side Adamax and Nadam."""
    g = python_rescale(grad, hp["rescale_grad"])
    if not is_static(hp["wd"], 0.0):
        g = g + rounded(operand(hp["wd"], g) * weight)
    return python_clip(g, hp["clip_gradient"])


def adam_update(grad: jax.Array, weight: jax.Array, mean: jax.Array, var: jax.Array,
                hp: Hyper, finite: Optional[jax.Array] = None):
    """``adam_update``, with ``hp["lr"]`` already bias-corrected (:func:`adam_fold`)::

        g = clip(rescale_grad * grad + wd * weight, clip_gradient)   # decay, then clip
        mean = beta1 * mean + (1 - beta1) * g
        var = beta2 * var + ((1 - beta2) * g) * g
        update = -((lr * mean) / (sqrt(var) + epsilon))

    Returns ``(update, mean, var)``.
    """
    g = prepared_gradient(grad, weight, hp)
    mean = keep_if(finite, _ema(g, mean, hp["beta1"]), mean)
    var = keep_if(finite, mean_square(g, var, hp["beta2"], centered=True), var)
    # -(x) added to w is exactly MXNet's w - x.
    return -(hyper(hp["lr"], g) * mean / (root(var) + hyper(hp["epsilon"], g))), mean, var


def _ema(g: jax.Array, m: jax.Array, beta: Scalar) -> jax.Array:
    # beta * m + (1 - beta) * g, the kernels' order.
    return rounded(hyper(beta, g) * m) + rounded(one_minus(beta, g) * g)


def adamax_update(grad: jax.Array, weight: jax.Array, m: jax.Array, u: jax.Array, hp: Hyper,
                  finite: Optional[jax.Array] = None):
    """``mx.optimizer.Adamax.update`` (NDArray operators), with ``hp["lr"]``
    already divided by ``1 - beta1**t`` and ``1 - beta1`` taken in float64
    (:func:`adamax_fold`)::

        g = clip(grad * rescale_grad + wd * weight, -clip_gradient, clip_gradient)
        m = m * beta1 + (1 - beta1) * g
        u = maximum(beta2 * u, |g|)
        update = -((lr * m) / u)

    Returns ``(update, m, u)``. ``0 / 0 = NaN`` where ``u`` is still 0.
    """
    g = python_prepared_gradient(grad, weight, hp)
    m = keep_if(finite, rounded(m * operand(hp["beta1"], g))
                + rounded(operand(hp["one_minus_beta1"], g) * g), m)
    u = keep_if(finite, jnp.maximum(u * operand(hp["beta2"], g), jnp.abs(g)), u)
    return -(operand(hp["lr"], g) * m / u), m, u


def nadam_update(grad: jax.Array, weight: jax.Array, m: jax.Array, v: jax.Array, hp: Hyper,
                 finite: Optional[jax.Array] = None):
    """``mx.optimizer.Nadam.update`` (NDArray operators), with the schedule
    scalars of :func:`nadam_advance` in ``hp``::

        g = clip(grad * rescale_grad + wd * weight, -clip_gradient, clip_gradient)
        m = m * beta1 + (1 - beta1) * g
        v = v * beta2 + ((1 - beta2) * g) * g
        m_bar = (1 - momentum_t) * (g / (1 - m_schedule))
                + momentum_t_1 * (m / (1 - m_schedule_next))
        update = -((lr * m_bar) / (sqrt(v / (1 - beta2**t)) + epsilon))

    Returns ``(update, m, v)``.
    """
    g = python_prepared_gradient(grad, weight, hp)
    s = functools.partial(operand, like=g)
    m = keep_if(finite, rounded(m * s(hp["beta1"])) + rounded(s(hp["one_minus_beta1"]) * g), m)
    v = keep_if(finite, rounded(v * s(hp["beta2"]))
                + rounded(s(hp["one_minus_beta2"]) * g * g), v)
    g_prime = divide(g, s(hp["one_minus_schedule"]))
    m_prime = divide(m, s(hp["one_minus_schedule_next"]))
    v_prime = divide(v, s(hp["one_minus_beta2_t"]))
    m_bar = (rounded(s(hp["one_minus_momentum_t"]) * g_prime)
             + rounded(s(hp["momentum_t_1"]) * m_prime))
    return -(s(hp["lr"]) * m_bar / (root(v_prime) + s(hp["epsilon"]))), m, v


def _sign(x: jax.Array) -> jax.Array:
    # mshadow's sign: -1, 0 or 1, and 0 for NaN (jnp.sign gives NaN there).
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def ftrl_update(grad: jax.Array, weight: jax.Array, z: jax.Array, n: jax.Array, hp: Hyper,
                finite: Optional[jax.Array] = None):
    """``ftrl_update``::

        g = clip(rescale_grad * grad, clip_gradient)        # no decay here
        z = z + (g - ((sqrt(n + g * g) - sqrt(n)) * weight) / lr)
        n = n + g * g
        w = ((sign(z) * lamda1 - z) / ((beta + sqrt(n)) / lr + wd)) * (|z| > lamda1)
        update = w - weight

    Returns ``(update, z, n)``. The new weight is built from ``z`` alone, so the
    update is ``w - weight``, and ``weight + update`` lands on ``w`` exactly
    when the difference is exact (Sterbenz: ``w`` within a factor 2 of
    ``weight``, or either zero); otherwise within half an ulp of
    ``max(|w|, |weight|)``.
    """
    g = clip(rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    lr = hyper(hp["lr"], g)
    gg = rounded(g * g)
    (n_z,) = apart(n)
    # z's loop reads the old n (its own n + gg, apart from the new n's) and runs
    # before the loop overwriting n, which reads the new z (loop structure).
    z = keep_if(finite, z + (g - divide(rounded((root(n_z + gg) - root(n_z)) * weight), lr)), z)
    n = keep_if(finite, after(n + gg, z), n)
    return ftrl_weight(z, n, hp) - weight, z, n


def ftrl_weight(z: jax.Array, n: jax.Array, hp: Hyper) -> jax.Array:
    """Ftrl's new weight from its new state::

        w = ((sign(z) * lamda1 - z) / ((beta + sqrt(n)) / lr + wd)) * (|z| > lamda1)

    (what MXNet writes; MXNet's class API keeps it as is, so mxopt's does too)."""
    lr, l1 = hyper(hp["lr"], z), hyper(hp["lamda1"], z)
    return ((rounded(_sign(z) * l1) - z) / (divide(hyper(hp["beta"], z) + root(n), lr)
                                            + hyper(hp["wd"], z))
            * _above(jnp.abs(z), l1))


def _above(x: jax.Array, bound: jax.Array) -> jax.Array:
    """MXNet's ``(x > bound)`` as a float factor, for ``x >= 0`` or NaN: 1 above,
    0 at or below, NaN where ``x`` is NaN.

    XLA rewrites a product with ``convert(x > bound)`` into a select of 0, so
    ``NaN * (x > bound)`` (NaN in MXNet's C++, and eagerly) would be 0 under
    ``jax.jit``: a NaN weight silently reset to 0. Adding :func:`nan_or_zero`
    changes no number, and the factor is no convert of a predicate: the
    product stays a product, and a NaN stays NaN.
    """
    return (x > bound).astype(x.dtype) + nan_or_zero(x)


def ftml_update(grad: jax.Array, weight: jax.Array, d: jax.Array, v: jax.Array, z: jax.Array,
                hp: Hyper, finite: Optional[jax.Array] = None):
    """``ftml_update``, with ``beta1**t``, ``beta2**t`` from :func:`ftml_fold`::

        g = clip(rescale_grad * grad + wd * weight, clip_gradient)
        v = beta2 * v + (1 - beta2) * (g * g)
        d_t = ((1 - beta1**t) / lr) * (sqrt(v / (1 - beta2**t)) + epsilon)
        z = (beta1 * z + (1 - beta1) * g) - (d_t - beta1 * d) * weight
        d = d_t;  w = -z / d_t;  update = w - weight

    Returns ``(update, d, v, z)``. ``epsilon`` is a C++ double field (parsed as
    :func:`operand`). The weight is rebuilt from ``z``, so the update is
    ``w - weight``: exact when ``w`` is within a factor 2 of ``weight``,
    otherwise within half an ulp of ``max(|w|, |weight|)``.
    """
    g = prepared_gradient(grad, weight, hp)
    one = jnp.ones((), g.dtype)
    b1 = hyper(hp["beta1"], g)
    v = keep_if(finite, mean_square(g, v, hp["beta2"], centered=False), v)

    def d_t(v):
        return rounded((one - hyper(hp["beta1_t"], g)) / hyper(hp["lr"], g)
                       * (root(divide(v, one - hyper(hp["beta2_t"], g)))
                          + operand(hp["epsilon"], g)))

    # z's loop reads the old d and computes its own d_t (a square root and two
    # divisions, apart from the new d's); the loop overwriting d reads the new z,
    # so it runs after z's (loop structure).
    z = keep_if(finite, (rounded(b1 * z) + rounded(one_minus(hp["beta1"], g) * g))
                - rounded((d_t(*apart(v)) - rounded(b1 * d)) * weight), z)
    d = keep_if(finite, after(d_t(v), z), d)
    return ftml_weight(d, z) - weight, d, v, z


def ftml_weight(d: jax.Array, z: jax.Array) -> jax.Array:
    """FTML's new weight from its new state: ``w = -z / d``."""
    return -z / d


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


# ----------------------------------------------------------------------------------
# SGD, NAG, Signum, AdaGrad, AdaDelta
# ----------------------------------------------------------------------------------

__all__ += [
    "sgd_mom_update", "multi_sgd_update", "sgd_update", "sgd_weight", "nag_mom_update",
    "nag_mom_weight", "signsgd_update",
    "signum_update", "momentum_choice", "python_rescale", "adagrad_update", "adadelta_update",
]


def _by_clip(bound: Optional[Scalar], clipped, unclipped) -> jax.Array:
    """``clipped()`` where the clip bound is on (> 0), else ``unclipped()``: the
    kernels group their products differently with and without clipping. A
    traced bound picks elementwise (both are computed), so 0 rounds as None."""
    if clip_is_static_off(bound):
        return unclipped()
    on_value = clipped()
    if not v.is_traced(bound):
        return on_value
    # A scalar predicate: a broadcast one would be unsharded on an Explicit mesh.
    return jax.lax.select(hyper(bound, on_value) > 0, on_value, unclipped())


def _scaled_lr_gradient(grad: jax.Array, lr: jax.Array, hp: Hyper) -> jax.Array:
    """``lr * clip(rescale_grad * grad)``, or ``(lr * rescale_grad) * grad``
    when clipping is off: the SGD kernels' two groupings."""

    def unclipped():
        if is_static(hp["rescale_grad"], 1.0):
            return rounded(lr * grad)
        return rounded(rounded(lr * hyper(hp["rescale_grad"], grad)) * grad)

    return _by_clip(hp["clip_gradient"], lambda: rounded(
        lr * clip(rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])), unclipped)


def _decayed(weight: jax.Array, lr_wd: Optional[jax.Array], step: jax.Array) -> jax.Array:
    """The update that takes ``weight`` to MXNet's ``(1 - lr*wd) * weight + step``.

    Where ``lr*wd`` is exactly 0 (None: known at trace time) the factor is 1 and
    ``step`` itself is the update: ``w + step`` is MXNet's result bit for bit.
    Otherwise MXNet's new weight is computed in its grouping and the update is
    ``new - w``, which is exact (so ``w + update == new``) whenever ``new`` is
    within a factor 2 of ``w`` (Sterbenz); a weight that shrinks by more in one
    step lands within an ulp of ``w``'s scale. The choice between the two forms
    is elementwise on the scalar, so a traced ``wd`` of 0 rounds as a static one.
    """
    if lr_wd is None:
        return step
    one = jnp.ones((), weight.dtype)
    new = rounded((one - lr_wd) * weight) + step
    # A scalar predicate: a broadcast one would be unsharded on an Explicit mesh.
    return jax.lax.select(lr_wd == 0, step, new - weight)


def _lr_wd(hp: Hyper, like: jax.Array) -> Optional[jax.Array]:
    # lr * wd as the kernels form it, in the weight's dtype; None when wd is a static 0.
    if is_static(hp["wd"], 0.0):
        return None
    return hyper(hp["lr"], like) * hyper(hp["wd"], like)


def sgd_mom_update(grad: jax.Array, weight: jax.Array, mom: jax.Array, hp: Hyper,
                   finite: Optional[jax.Array] = None):
    """``multi_sgd_mom_update`` / ``multi_mp_sgd_mom_update`` (``MultiSGDKernel``),
    what ``mx.optimizer.SGD`` runs with ``momentum > 0``::

        mom = (momentum * mom - (lr * wd) * weight) - lr * clip(rescale_grad * grad)
        update = mom                      # w + mom is MXNet's new weight exactly

    Without clipping the last product is ``(lr * rescale_grad) * grad``. ``lr``
    and ``wd`` are ``Tuple<float>`` entries (:func:`tuple_hyper`, correctly
    rounded); the others are C++ float fields (:func:`hyper`). Returns
    ``(update, mom)``.
    """
    lr = tuple_hyper(hp["lr"], weight)
    m = rounded(hyper(hp["momentum"], weight) * mom)
    if not is_static(hp["wd"], 0.0):
        m = m - rounded(rounded(lr * tuple_hyper(hp["wd"], weight)) * weight)
    m = keep_if(finite, m - _scaled_lr_gradient(grad, lr, hp), mom)
    return m, m


def multi_sgd_update(grad: jax.Array, weight: jax.Array, hp: Hyper,
                     finite: Optional[jax.Array] = None):
    """``multi_sgd_update`` / ``multi_mp_sgd_update``, what ``mx.optimizer.SGD``
    runs with ``momentum=0``: the momentum kernel on a zero buffer, so it rounds
    as ``w + ((0 - (lr * wd) * w) - lr * clip(rescale_grad * grad))`` (not as
    :func:`sgd_update`)::

        update = (0 - (lr * wd) * weight) - lr * clip(rescale_grad * grad)

    Returns ``(update,)``.
    """
    del finite  # no state; the engine zeroes a skipped step's update
    lr = tuple_hyper(hp["lr"], weight)
    scaled = _scaled_lr_gradient(grad, lr, hp)
    if is_static(hp["wd"], 0.0):
        return (-scaled,)
    decay_term = rounded(rounded(lr * tuple_hyper(hp["wd"], weight)) * weight)
    return ((jnp.zeros((), weight.dtype) - decay_term) - scaled,)


def sgd_update(grad: jax.Array, weight: jax.Array, hp: Hyper,
               finite: Optional[jax.Array] = None):
    """``sgd_update`` / ``mp_sgd_update`` (``SGDKernel``), what ``mx.optimizer.NAG``
    runs with ``momentum=0``::

        w_new = (1 - lr * wd) * weight - lr * clip(rescale_grad * grad)
        update = w_new - weight   (exactly -lr * clip(...) where lr * wd == 0)

    Without clipping the last product is ``(lr * rescale_grad) * grad``. See
    :func:`_decayed` for when ``w + update`` is ``w_new`` bit for bit
    (:func:`sgd_weight` gives ``w_new`` itself). Returns ``(update,)``.
    """
    del finite
    step = -_scaled_lr_gradient(grad, hyper(hp["lr"], weight), hp)
    return (_decayed(weight, _lr_wd(hp, weight), step),)


def sgd_weight(grad: jax.Array, weight: jax.Array, hp: Hyper,
               finite: Optional[jax.Array] = None):
    """:func:`sgd_update` giving MXNet's new weight itself, ``(w_new,)``, bit for
    bit where a shrinking weight puts ``w + update`` on the old weight's ulp grid
    (the class form :class:`mxopt.NAG` writes it; the old weight where
    ``finite`` is False)."""
    lr_wd = _lr_wd(hp, weight)
    step = -_scaled_lr_gradient(grad, hyper(hp["lr"], weight), hp)
    # (1 - 0) * w == w: where lr * wd is known to be 0 the factor is skipped.
    new_w = weight + step if lr_wd is None else (
        rounded((jnp.ones((), weight.dtype) - lr_wd) * weight) + step)
    return (keep_if(finite, new_w, weight),)


def _nag_mom(grad: jax.Array, weight: jax.Array, mom: jax.Array, hp: Hyper,
             finite: Optional[jax.Array], written):
    """``(w_new, mom)`` of ``NAGMomKernel``, the buffer's decay term reading
    ``written(w_new)``, the weight as the caller stores it."""
    lr, mu = hyper(hp["lr"], weight), hyper(hp["momentum"], weight)
    g = clip(rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    m0 = rounded(mu * mom)
    one = jnp.ones((), weight.dtype)
    new_w = (weight - m0) + rounded(
        (mu + one) * (m0 - rounded(lr * decay(g, weight, hp["wd"]))))
    # The buffer's loop reads the weight's output, so it runs after the weight's
    # loop, which reads the old buffer: no copy of it (loop structure).
    stored = written(new_w)
    # wd * w_new with wd == 0 too, as the kernel computes it (NaN for an inf weight).
    m = keep_if(finite, m0 - rounded(lr * (g + rounded(hyper(hp["wd"], g) * stored))), mom)
    return new_w, m


def nag_mom_update(grad: jax.Array, weight: jax.Array, mom: jax.Array, hp: Hyper,
                   finite: Optional[jax.Array] = None):
    """``nag_mom_update`` / ``mp_nag_mom_update`` (``NAGMomKernel``), what
    ``mx.optimizer.NAG`` runs with ``momentum > 0``::

        g = clip(rescale_grad * grad)
        m0 = momentum * mom
        w_new = (weight - m0) + (momentum + 1) * (m0 - lr * (g + wd * weight))
        mom = m0 - lr * (g + wd * w_new)      # the NEW weight: MXNet's kernel
                                              # writes w before it updates mom
        update = w_new - weight

    ``w_new - weight`` is exact, so ``w + update == w_new``, whenever ``w_new``
    is within a factor 2 of ``weight`` (Sterbenz); where a weight shrinks by
    more in one step, ``w + update`` lies on the grid of ``ulp(weight)``, within
    an ulp of the old weight's magnitude of ``w_new`` (optax's contract: the
    weight is ``w + update``). The buffer reads the weight as written,
    ``weight + update`` (:func:`stored_weight`), as MXNet's kernel reads
    ``weight_data`` after writing it. :func:`nag_mom_weight` gives ``w_new``
    itself. Returns ``(update, mom)``.
    """
    def written(new_w):
        return stored_weight(weight, new_w - weight, finite)

    new_w, m = _nag_mom(grad, weight, mom, hp, finite, written)
    return new_w - weight, m


def nag_mom_weight(grad: jax.Array, weight: jax.Array, mom: jax.Array, hp: Hyper,
                   finite: Optional[jax.Array] = None):
    """:func:`nag_mom_update` giving MXNet's new weight itself, ``(w_new, mom)``,
    with the buffer reading ``w_new``: ``NAGMomKernel`` bit for bit (the class
    form :class:`mxopt.NAG` writes it; the old weight where ``finite`` is
    False)."""
    new_w, m = _nag_mom(grad, weight, mom, hp, finite,
                        lambda new_w: keep_if(finite, new_w, weight))
    return keep_if(finite, new_w, weight), m


def signsgd_update(grad: jax.Array, weight: jax.Array, hp: Hyper,
                   finite: Optional[jax.Array] = None):
    """``signsgd_update`` (``SignSGDKernel``), what ``mx.optimizer.Signum`` runs
    with ``momentum=0``::

        w_new = (1 - lr * wd) * weight - lr * sign(grad)
        update = w_new - weight   (exactly -lr * sign(grad) where lr * wd == 0)

    ``rescale_grad`` and ``clip_gradient`` are ignored, as the kernel ignores
    them; ``wd`` is decoupled decay; ``sign(0) = sign(NaN) = 0``. Returns
    ``(update,)``.
    """
    del finite
    lr = hyper(hp["lr"], weight)
    return (_decayed(weight, _lr_wd(hp, weight), -rounded(lr * _sign(grad))),)


def signum_update(grad: jax.Array, weight: jax.Array, mom: jax.Array, hp: Hyper,
                  finite: Optional[jax.Array] = None):
    """``signum_update`` (``SignumKernel``), what ``mx.optimizer.Signum`` runs with
    ``momentum > 0``::

        mom = (momentum * mom - ((1 - momentum) * wd) * weight)
              - (1 - momentum) * clip(rescale_grad * grad)
        w_new = (1 - lr * wd_lh) * weight + lr * sign(mom)
        update = w_new - weight   (exactly lr * sign(mom) where lr * wd_lh == 0)

    ``mom`` holds the *negated* moving average. Without clipping the last term
    is ``((1 - momentum) * rescale_grad) * grad``. Returns ``(update, mom)``.
    """
    mu, one_minus_mu = hyper(hp["momentum"], weight), one_minus(hp["momentum"], weight)
    m = rounded(mu * mom)
    if not is_static(hp["wd"], 0.0):
        m = m - rounded(rounded(one_minus_mu * hyper(hp["wd"], weight)) * weight)

    def unclipped():
        factor = one_minus_mu if is_static(hp["rescale_grad"], 1.0) else rounded(
            one_minus_mu * hyper(hp["rescale_grad"], weight))
        return rounded(factor * grad)

    m = keep_if(finite, m - _by_clip(hp["clip_gradient"], lambda: rounded(
        one_minus_mu * clip(rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])),
        unclipped), mom)
    lr = hyper(hp["lr"], weight)
    lr_wd_lh = None if is_static(hp["wd_lh"], 0.0) else lr * hyper(hp["wd_lh"], weight)
    return _decayed(weight, lr_wd_lh, rounded(lr * _sign(m))), m


def momentum_choice(with_momentum, without_momentum):
    """A kernel for a momentum that is a JAX scalar, unknown at trace time: it
    keeps the buffer and takes, elementwise, ``with_momentum``'s results where
    ``momentum > 0`` and ``without_momentum``'s (the kernel MXNet runs with
    ``momentum=0``; the buffer is left as it is) elsewhere, so a momentum
    injected as 0 computes exactly what a Python 0 does."""

    def kernel(grad, weight, mom, hp, finite=None):
        u_mom, new_mom = with_momentum(grad, weight, mom, hp, finite)
        (u_plain,) = without_momentum(grad, weight, hp, finite)
        on = hyper(hp["momentum"], weight) > 0  # scalar: keeps the operands' sharding
        chosen = jax.lax.select(on, new_mom, mom)
        if u_mom is new_mom:
            # SGD's update is its new buffer: the chosen buffer is that value where
            # the update is taken, and reading it keeps the weight's loop from
            # recomputing it from the old buffer, which the buffer's loop
            # overwrites (XLA would copy it first: loop structure).
            u_mom = chosen
        return jax.lax.select(on, u_mom, u_plain), chosen

    kernel.__name__ = f"{with_momentum.__name__}_or_{without_momentum.__name__}"
    return kernel


def adagrad_update(grad: jax.Array, weight: jax.Array, history: jax.Array, hp: Hyper,
                   finite: Optional[jax.Array] = None):
    """``mx.optimizer.AdaGrad.update`` (Python NDArray operators; each scalar an
    :func:`operand`)::

        g = clip(grad * rescale_grad, clip_gradient)    # whenever not None
        history = history + g * g
        update = (g / sqrt(history + eps) + weight * wd) * (-lr)

    The decay is decoupled (outside the history and the root) but scaled by
    ``lr``; ``eps`` is inside the root. ``w + update`` is MXNet's
    ``weight[:] += ...`` exactly. Returns ``(update, history)``.
    """
    g = python_clip(python_rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    history = keep_if(finite, history + rounded(g * g), history)
    div = g / root(history + operand(hp["eps"], g))
    if not is_static(hp["wd"], 0.0):
        div = div + rounded(weight * operand(hp["wd"], g))
    return rounded(div * -operand(hp["lr"], g)), history


def adadelta_update(grad: jax.Array, weight: jax.Array, acc_g: jax.Array,
                    acc_delta: jax.Array, hp: Hyper, finite: Optional[jax.Array] = None):
    """``mx.optimizer.AdaDelta.update`` (Python NDArray operators; each scalar an
    :func:`operand`; ``1 - rho`` is computed in Python's float64 when ``rho`` is
    a Python number, as MXNet computes it, and in float32 when it is a JAX
    scalar)::

        g = clip(grad * rescale_grad, clip_gradient)    # whenever not None
        acc_g = acc_g * rho + ((1 - rho) * g) * g
        delta = (sqrt(acc_delta + epsilon) / sqrt(acc_g + epsilon)) * g
        acc_delta = acc_delta * rho + ((1 - rho) * delta) * delta
        update = -(delta + weight * wd)

    The learning rate is never read (MXNet's AdaDelta ignores it), nor is the
    decay scaled by one. Returns ``(update, acc_g, acc_delta)``.
    """
    rho, eps = hp["rho"], hp["epsilon"]
    g = python_clip(python_rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    r = operand(rho, g)
    if "one_minus_rho" in hp:  # computed by the caller (the class form, as MXNet's host)
        one_minus_rho = operand(hp["one_minus_rho"], g)
    elif _is_python_number(rho):  # Python's float64, as MXNet's Python side
        one_minus_rho = operand(1.0 - rho, g)
    else:
        one_minus_rho = jnp.ones((), g.dtype) - r
    acc_g = keep_if(finite, rounded(acc_g * r) + rounded(rounded(one_minus_rho * g) * g), acc_g)
    e = operand(eps, g)

    def current_delta(acc_delta, acc_g):
        return rounded((root(acc_delta + e) / root(acc_g + e)) * g)

    delta = current_delta(acc_delta, acc_g)
    if not is_static(hp["wd"], 0.0):
        delta = delta + rounded(weight * operand(hp["wd"], g))
    update = -delta
    # The weight's loop and acc_delta's both need the old acc_delta: acc_delta's
    # computes its own delta (apart) and reads the new weight, so it runs last
    # (loop structure).
    stored = stored_weight(weight, update, finite)
    delta = current_delta(*apart(acc_delta, acc_g))
    new_acc_delta = rounded(acc_delta * r) + rounded(rounded(one_minus_rho * delta) * delta)
    acc_delta = keep_if(finite, after(new_acc_delta, stored), acc_delta)
    return update, acc_g, acc_delta


# ----------------------------------------------------------------------------------
# LARS and LAMB: layer-wise trust ratios from per-leaf norms
# ----------------------------------------------------------------------------------
#
# Both take squared L2 norms of whole leaves with MXNet's ``multi_sum_sq``: on
# CPU a sequential float32 sum ``sum += x[j] * x[j]`` over the stored array,
# each product rounded in the array's dtype (float16 under multi_precision,
# where the stored weight is the master's cast). Here ``jnp.sum`` reduces in
# XLA's order instead (a tree, which is also what makes the norm of a sharded
# leaf correct: each device sums its shard and the partial sums are added), so
# a norm can differ from MXNet's in the last bits; the trust ratio's relative
# error is then about 1e-7, well inside the tests' rtol 1e-5. The NumPy twins in
# :mod:`mxopt.reference` sum sequentially, as MXNet does, and are bit-exact.

__all__ += ["sum_of_squares", "lars_rate", "lars_update", "lars_mom_update",
            "lars_momentum_advance", "lamb_fold", "lamb_update"]


def sum_of_squares(x: jax.Array, stored_dtype: Optional[str] = None, *,
                   shared: bool = False) -> jax.Array:
    """``multi_sum_sq`` of one leaf: ``sum(x * x)`` as a float32 scalar, each
    product rounded in ``stored_dtype`` (the dtype the caller stores the leaf
    in: float16 under multi_precision, where ``x`` is the float32 master or
    gradient and its cast is exactly the stored array) or in ``x``'s own.

    ``shared``: ``x`` is a float32 cast of a stored float16/bfloat16 array that
    the kernel reads too (the gradient under master weights). XLA:CPU hands a
    large reduction to a YNNPACK fusion, which takes in a producer only when
    nothing else reads it: the cast, shared with the kernel's loop, would be
    written to memory first (twice the stored array's bytes). :func:`apart`
    gives the norm its own: the cast back to the stored dtype folds into the
    stored array, read from memory (a float32 gradient of a float16 param,
    which MXNet never has, is rounded into a float16 copy instead).
    """
    dtype = jnp.dtype(stored_dtype if stored_dtype is not None else x.dtype)
    if dtype in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)):
        if shared and x.dtype != dtype:
            x, = apart(x.astype(dtype))
        return _low_sum_of_squares(x, dtype.name)
    return _sum_of_squares(x.astype(dtype))


@jax.jit
def _sum_of_squares(x: jax.Array) -> jax.Array:
    # No rounding guard on the product: XLA:CPU's reduction kernels take
    # x * x in, but would write out any guarded expression first (a
    # parameter-sized temporary). Jitted on its own so that a step outside
    # jax.jit sums exactly as the same step under it does.
    return jnp.sum((x * x).astype(jnp.float32), dtype=jnp.float32)


def flat(x: jax.Array) -> jax.Array:
    """``x.ravel()`` for a reduction that runs faster over a flat array, or ``x``
    itself where its type carries sharded axes (a mesh with Explicit axes),
    which a reshape cannot merge."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None) or ()
    return x if any(axis is not None for axis in spec) else x.ravel()


def _stored_value(x: jax.Array, dtype: str) -> jax.Array:
    """``x`` rounded to the 16-bit ``dtype`` through its bit pattern: XLA may
    otherwise keep excess precision through a cast down and back up
    (``xla_allow_excess_precision``), and ``reduce_precision`` would flush
    float16 subnormals, which MXNet keeps."""
    bits = jax.lax.bitcast_convert_type(x.astype(dtype), jnp.int16)
    return jax.lax.bitcast_convert_type(bits, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames="dtype")
def _low_sum_of_squares(x: jax.Array, dtype: str) -> jax.Array:
    # float16/bfloat16 values and products, each as stored (_stored_value), so
    # that the products of the stored weight are summed, not the float32
    # master's.
    x = _stored_value(x, dtype)
    return jnp.sum(_stored_value(x * x, dtype).astype(jnp.float32), dtype=jnp.float32)


def lars_rate(grad: jax.Array, weight: jax.Array, hp: Hyper) -> jax.Array:
    """This leaf's rate after ``multi_lars`` (float32), or its plain rate where
    ``hp["trust"]`` is False (MXNet's names ending in ``gamma``, ``beta`` or
    ``bias``)::

        w_norm = sqrt(sum(w * w)),  g_sq = sum(grad * grad)     # raw gradient
        lr' = lr * eta * w_norm / (sqrt(g_sq) * rescale_grad + wd * w_norm + eps)
                                      if w_norm > 0 and g_sq > 0, else lr

    ``lr`` and ``wd`` reach it as a float32 array (correctly rounded:
    :func:`tuple_hyper`), ``eta``, ``eps`` and ``rescale_grad`` as C++ float
    fields (:func:`hyper`); every operation is float32.
    """
    f32 = jnp.zeros((), jnp.float32)
    lr = tuple_hyper(hp["lr"], f32)
    if not hp["trust"]:
        return lr
    stored = hp.get("stored_dtype")
    w_sq, g_sq = sum_of_squares(weight, stored), sum_of_squares(grad, stored, shared=True)
    w_norm = jnp.sqrt(w_sq)
    denominator = (rounded(jnp.sqrt(g_sq) * hyper(hp["rescale_grad"], f32))
                   + rounded(tuple_hyper(hp["wd"], f32) * w_norm)) + hyper(hp["eps"], f32)
    trusted = rounded(lr * hyper(hp["eta"], f32)) * w_norm / denominator
    return jnp.where((w_norm > 0) & (g_sq > 0), trusted, lr)


def _lars_hp(grad: jax.Array, weight: jax.Array, hp: Hyper) -> dict:
    # SGD's kernels with the trust-scaled rate (a float32 array, taken as is) and
    # the momentum of this leaf's call: corrected in a list call's first chunk.
    momentum = hp["momentum"]
    if hp.get("corrected") and "corrected_momentum" in hp:  # none without momentum
        momentum = hp["corrected_momentum"]
    return dict(hp, lr=lars_rate(grad, weight, hp), momentum=momentum)


def lars_update(grad: jax.Array, weight: jax.Array, hp: Hyper,
                finite: Optional[jax.Array] = None):
    """``mx.optimizer.LARS`` with ``momentum=0``: :func:`lars_rate`, then
    ``preloaded_multi_sgd_update`` (:func:`multi_sgd_update`'s arithmetic with
    that rate). Returns ``(update,)``."""
    return multi_sgd_update(grad, weight, _lars_hp(grad, weight, hp), finite)


def lars_mom_update(grad: jax.Array, weight: jax.Array, mom: jax.Array, hp: Hyper,
                    finite: Optional[jax.Array] = None):
    """``mx.optimizer.LARS`` with ``momentum > 0``: :func:`lars_rate`, then
    ``preloaded_multi_sgd_mom_update`` (:func:`sgd_mom_update`'s arithmetic with
    that rate and, in the call's first chunk after a rate change,
    ``hp["corrected_momentum"]``). Returns ``(update, mom)``."""
    return sgd_mom_update(grad, weight, mom, _lars_hp(grad, weight, hp), finite)


def lars_momentum_advance(last_lr: Any, cur_lr: Any, prev_lr: Any, hp: Hyper):
    """LARS's momentum correction for one optimizer call: MXNet's
    ``momentum * (cur_lr / last_lr)`` when ``momentum_correction`` is on and
    ``last_lr != 0``, else ``momentum``, on the *base* rates (scheduler or
    ``learning_rate``, before ``lr_mult``).

    ``last_lr`` is the carried rate of the previous call, NaN before the first
    (MXNet's ``None``: the first call's ratio is 1). ``prev_lr`` is the previous
    step's rate where it is known exactly without the carry (a schedule of the
    count, or a Python constant), else None (a traced rate: the carried value,
    so an unchanged rate gives exactly 1). Python float64 on the host, as MXNet's,
    when every value is concrete. Returns ``({"corrected_momentum": m},
    cur_lr)``, the new carried rate.
    """
    momentum = hp["momentum"]
    if _host_scalars(last_lr, cur_lr, prev_lr, momentum):
        cur = _as_host(cur_lr)
        if math.isnan(_as_host(last_lr)):
            last = cur
        else:
            last = _as_host(prev_lr if prev_lr is not None else last_lr)
        m = _as_host(momentum)
        if hp["momentum_correction"] and last != 0:
            m = m * (cur / last)
        return {"corrected_momentum": m}, cur
    f = _device_float()
    cur = jnp.asarray(cur_lr, f)
    last = jnp.asarray(last_lr, f) if prev_lr is None else jnp.asarray(prev_lr, f)
    last = jnp.where(jnp.isnan(jnp.asarray(last_lr, f)), cur, last)
    m = jnp.asarray(momentum, f)
    if hp["momentum_correction"]:
        safe = jnp.where(last != 0, last, jnp.ones((), f))
        m = jnp.where(last != 0, m * (cur / safe), m)
    return {"corrected_momentum": m}, cur


def lamb_fold(hp: Hyper) -> dict:
    """LAMB's ``beta1**t`` and ``beta2**t`` (``beta1_t``, ``beta2_t``): float32
    ``powf`` of the parsed betas, as ``multi_lamb_update`` computes them; the
    same powers as FTML's (:func:`ftml_fold`)."""
    return ftml_fold(hp)


def lamb_update(grad: jax.Array, weight: jax.Array, mean: jax.Array, var: jax.Array,
                hp: Hyper, finite: Optional[jax.Array] = None):
    """One tensor of ``multi_lamb_update`` / ``multi_mp_lamb_update``, what
    ``mx.optimizer.LAMB`` runs::

        r1 = sqrt(sum(w * w))                     # the stored weight, before the step
        g = clip(rescale_grad * grad, clip_gradient)   # no decay in the moments
        mean = beta1 * mean + (1 - beta1) * g
        var = beta2 * var + ((1 - beta2) * g) * g
        u = (mean / (1 - beta1**t)) / (sqrt(var / (1 - beta2**t)) + epsilon) + wd * w
            # without bias_correction: mean / (sqrt(var) + epsilon) + wd * w
        r2 = sqrt(sum(u * u))
        r1 = max(r1, lower_bound); r1 = min(r1, upper_bound)   # each only if set
        ratio = 1 if r1 == 0 or r2 == 0 else r1 / r2
        update = -((lr * ratio) * u)

    ``lr`` and ``wd`` are ``Tuple<float>`` entries (:func:`tuple_hyper`), the
    rest C++ float fields; the powers come from :func:`lamb_fold`. MXNet's
    kernel evaluates the line of ``u`` in double (its unqualified ``sqrt`` is
    C's double one) and rounds once; here it is float32, so ``u`` can be an
    ulp off (the twin in :mod:`mxopt.reference` does it in double). ``u`` is
    computed twice, equal (for ``r2`` and for the update), rather than
    stored: no parameter-sized temporary. Returns ``(update, mean, var)``.
    """
    stored = hp.get("stored_dtype")
    r1 = jnp.sqrt(sum_of_squares(weight, stored))
    g = clip(rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    new_mean = keep_if(finite, _ema(g, mean, hp["beta1"]), mean)
    new_var = keep_if(finite, mean_square(g, var, hp["beta2"], centered=True), var)
    scalars = _lamb_scalars(hp, g)
    u = _lamb_direction(new_mean, new_var, weight, scalars, root)
    # r2 from a second computation of u: shared with the update, u would be
    # written to memory for the reduction (a parameter-sized temporary). This
    # one reads the new moments (outputs, in memory) and the weight, and every
    # scalar, through apart(), so that no value of it is shared with another
    # loop (guard_constants), and takes a plain sqrt: XLA:CPU's reduction
    # fusions do not take root's reduce_precision in, and XLA cannot turn
    # this sqrt into an rsqrt (epsilon is added before the division), so both
    # are the same u. It reads the arrays flat: over MXNet's (out, in, 3, 3)
    # and (out, in, 1, 1) kernels the same reduction fusion ran 3x and 12x
    # slower (measured), and a contiguous array's flat view moves nothing. On
    # a skipped step both read the old moments, and the update is zeroed.
    *arrays, own_scalars = apart(new_mean, new_var, weight, scalars)
    r2 = jnp.sqrt(sum_of_squares(_lamb_direction(*(flat(x) for x in arrays), own_scalars,
                                                 jnp.sqrt)))
    r1 = _lamb_bounded(r1, hp)
    ratio = jnp.where((r1 == 0) | (r2 == 0), jnp.ones((), jnp.float32), r1 / r2)
    lr = rounded(tuple_hyper(hp["lr"], g) * ratio.astype(g.dtype))
    # -(x) added to w is exactly MXNet's w - x.
    return -rounded(lr * u), new_mean, new_var


def _lamb_bounded(r1: jax.Array, hp: Hyper) -> jax.Array:
    # r1 clamped to [lower_bound, upper_bound], each only if set; a traced
    # bound of 0 is off, as MXNet's Python layer drops a falsy one.
    f32 = jnp.zeros((), jnp.float32)
    if hp.get("lower_bound") is not None:
        r1 = jnp.maximum(r1, hyper(hp["lower_bound"], f32))
    if hp.get("upper_bound") is not None:
        upper = hyper(hp["upper_bound"], f32)
        r1 = jnp.where(upper > 0, jnp.minimum(r1, upper), r1)
    return r1


def _lamb_scalars(hp: Hyper, like: jax.Array, wd_field=tuple_hyper) -> dict:
    # The scalars of LAMB's u: epsilon, the bias corrections' 1 - beta**t, wd
    # (a Tuple<float> entry in the list kernel, a float field in phase 1).
    one = jnp.ones((), like.dtype)
    scalars = dict(guard_constants(like), epsilon=hyper(hp["epsilon"], like))
    if hp["bias_correction"]:
        scalars["one_minus_beta1_t"] = one - jnp.asarray(hp["beta1_t"], like.dtype)
        scalars["one_minus_beta2_t"] = one - jnp.asarray(hp["beta2_t"], like.dtype)
    if not is_static(hp["wd"], 0.0):
        scalars["wd"] = wd_field(hp["wd"], like)
    return scalars


def _lamb_direction(mean: jax.Array, var: jax.Array, weight: jax.Array, scalars: dict,
                    sqrt: Callable[[jax.Array], jax.Array]) -> jax.Array:
    # LAMB's u from the new moments (lamb_update's docstring).
    if "one_minus_beta1_t" in scalars:
        mean = divide(mean, scalars["one_minus_beta1_t"], scalars["zero"])
        var = divide(var, scalars["one_minus_beta2_t"], scalars["zero"])
    u = mean / (sqrt(var) + scalars["epsilon"])
    if "wd" in scalars:
        u = u + rounded(scalars["wd"] * weight, scalars["lowest"])
    return u


# ----------------------------------------------------------------------------------
# Test, DCASGD, SGLD, GroupAdaGrad, LBSGD (issue 18; ccSGD is SGD's kernels)
# ----------------------------------------------------------------------------------

__all__ += ["test_update", "dcasgd_update", "sgld_update", "sgld_advance",
            "group_adagrad_update", "row_mean_square", "lbsgd_update", "lbsgd_plain_update",
            "lbsgd_advance", "lbsgd_warmup_mult", "lbsgd_lars_mult"]


def test_update(grad: jax.Array, weight: jax.Array, weight_copy: jax.Array, hp: Hyper,
                finite: Optional[jax.Array] = None):
    """``mx.optimizer.Test.update`` (NDArray operators)::

        w = w + grad * rescale_grad        # no lr, wd, clip, schedule or count
        weight_copy = w                    # float32, whatever the weight's dtype

    Returns ``(update, weight_copy)``.
    """
    u = python_rescale(grad, hp["rescale_grad"])
    # The new weight as the step writes it, so that the copy's loop reads that
    # output rather than the old weight, which would be copied first.
    new = stored_weight(weight, u, finite).astype(weight_copy.dtype)
    return u, keep_if(finite, new, weight_copy)


def dcasgd_update(grad: jax.Array, weight: jax.Array, weight_previous: jax.Array, hp: Hyper,
                  finite: Optional[jax.Array] = None):
    """``mx.optimizer.DCASGD.update`` with ``momentum=0`` (NDArray operators; each
    scalar an :func:`operand`)::

        g = clip(grad * rescale_grad, clip_gradient)    # whenever not None
        update = ((g + wd * w) + ((lamda * g) * g) * (w - weight_previous)) * (-lr)
        weight_previous = w

    The delay-compensation term uses the weight *before* this step and the
    one before the previous step. Returns ``(update, weight_previous)``.
    """
    g = python_clip(python_rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    t = g if is_static(hp["wd"], 0.0) else g + rounded(weight * operand(hp["wd"], g))
    dc = rounded(rounded(rounded(g * operand(hp["lamda"], g)) * g) * (weight - weight_previous))
    lr = hp["lr"]
    minus_lr = operand(-lr, g) if _is_python_number(lr) else -operand(lr, g)
    return rounded((t + dc) * minus_lr), keep_if(finite, weight, weight_previous)


def sgld_advance(key: jax.Array, hp: Hyper):
    """The PRNG key of one leaf's noise, and the key carried on: SGLD's key is
    split once per floating leaf, in the params' flatten order
    (``new_key, leaf_key = jax.random.split(key)``)."""
    del hp
    new_key, leaf_key = jax.random.split(key)
    return {"key": leaf_key}, new_key


def sgld_update(grad: jax.Array, weight: jax.Array, hp: Hyper,
                finite: Optional[jax.Array] = None):
    """``mx.optimizer.SGLD.update`` (NDArray operators; each scalar an
    :func:`operand`)::

        g = clip(grad * rescale_grad, clip_gradient)    # whenever not None
        drift = (g + wd * w) * (-lr / 2)
        update = drift + normal(0, sqrt(lr))            # from hp["key"]

    MXNet adds the drift and the noise to the weight one after the other; here
    their sum is the update, which rounds differently only in the random part.
    The noise is drawn in the weight's dtype, as MXNet draws it. Returns
    ``(update,)``.
    """
    del finite  # no state; the engine zeroes a skipped step's update
    g = python_clip(python_rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    d = g if is_static(hp["wd"], 0.0) else g + rounded(weight * operand(hp["wd"], g))
    lr = hp["lr"]
    if _is_python_number(lr):
        half, scale = operand(-lr / 2, g), operand(math.sqrt(lr), g)
    else:
        lr32 = jnp.asarray(lr, jnp.float32)
        half, scale = (-(lr32 / 2)).astype(g.dtype), jnp.sqrt(lr32).astype(g.dtype)
    noise = normal(hp["key"], jnp.shape(weight), weight.dtype)
    return (rounded(d * half) + rounded(noise * scale),)


def normal(key: jax.Array, shape: tuple, dtype: Any) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, bit for bit, computed in the
    loop that reads it.

    JAX lowers its threefry hash on CPU as a loop over the hash's five round
    groups, whose state is two uint32 arrays of ``shape``: XLA:CPU writes them
    to memory (SGLD's step allocated 4x the float32 params). Here the hash is
    the same Threefry-2x32, unrolled (:func:`_threefry2x32`), so its output is
    elementwise in the counters and fuses into the update's loop; JAX's own
    ``normal`` turns its bits into the noise. This is JAX's default
    ``threefry2x32`` with ``jax_threefry_partitionable`` (the default since
    JAX 0.5): bits ``h1 ^ h2`` of the hash of the 64-bit element index split
    in (high, low) words. Any other key implementation or setting, a float64
    dtype, or 2**32 elements or more take ``jax.random.normal`` itself.
    """
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    impl = str(jax.random.key_impl(key)) if typed else jax.config.jax_default_prng_impl
    if (impl != "threefry2x32" or not jax.config.jax_threefry_partitionable
            or jnp.dtype(dtype).itemsize > 4 or math.prod(shape) >= 2 ** 32):
        return jax.random.normal(key, shape, dtype)
    data = jax.random.key_data(key) if typed else key
    return jax.random.normal(jax.random.wrap_key_data(data, impl=_UNROLLED_THREEFRY), shape,
                             dtype)


def _threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array):
    # Threefry-2x32, 20 rounds (Salmon et al. 2011), as jax's threefry2x32
    # primitive computes it, written out round by round.
    def rotate_left(x, d):
        return (x << np.uint32(d)) | (x >> np.uint32(32 - d))

    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x1 = x1 + x2
            x2 = x1 ^ rotate_left(x2, r)
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _unrolled_random_bits(key: jax.Array, bit_width: int, shape: tuple) -> jax.Array:
    # jax's partitionable threefry random bits for fewer than 2**32 elements:
    # the element's flat index is (0, index) in 2x32 words.
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, dim) * np.uint32(stride)
        stride *= shape[dim]
    h1, h2 = _threefry2x32(key[0], key[1], jnp.zeros(shape, jnp.uint32), index)
    return (h1 ^ h2).astype(jnp.dtype(f"uint{bit_width}"))


def _draws_only(key: jax.Array, *args) -> jax.Array:
    # normal() wraps a key's data only to draw from it once.
    del key, args
    raise NotImplementedError("mxopt._kernels.normal's key draws its noise only")


_UNROLLED_THREEFRY = jax.extend.random.define_prng_impl(
    key_shape=(2,), seed=_draws_only, split=_draws_only,
    random_bits=_unrolled_random_bits, fold_in=_draws_only,
    name="mxopt_unrolled_threefry2x32", tag="mxu")


def row_mean_square(g: jax.Array) -> jax.Array:
    """``mean(square(g), axis=1, keepdims=True)`` as MXNet computes it: each row
    summed left to right with Kahan compensation (mshadow's ``red::sum``), then
    divided by the row length. A plain ``jnp.mean`` rounds differently."""
    sq = rounded(g * g)

    def add(carry, x):
        s, r = carry
        y = x - r
        t = s + y
        return (t, (t - s) - y), None

    zero = jnp.zeros_like(sq[:, 0])  # sharded like the rows
    (total, _), _ = jax.lax.scan(add, (zero, zero), jnp.swapaxes(sq, 0, 1))
    return divide(total, jnp.asarray(sq.shape[1], sq.dtype))[:, None]


def group_adagrad_update(grad: jax.Array, weight: jax.Array, history: jax.Array, hp: Hyper,
                         finite: Optional[jax.Array] = None):
    """``mx.optimizer.contrib.GroupAdaGrad.update`` on dense arrays (NDArray
    operators; each scalar an :func:`operand`), for a 2-D weight::

        g = clip(grad * rescale_grad, clip_gradient)    # whenever not None
        history = history + mean(g * g, axis=1, keepdims=True)     # (rows, 1)
        update = -((lr * g) / sqrt(history + eps))

    Returns ``(update, history)``.
    """
    g = python_clip(python_rescale(grad, hp["rescale_grad"]), hp["clip_gradient"])
    history = keep_if(finite, history + row_mean_square(g), history)
    x = rounded(g * operand(hp["lr"], g))
    # A division by the broadcast row root would become a multiplication by its
    # reciprocal (as divide explains); adding nan_or_zero(x) (+0) keeps it a division.
    d = root(history + operand(hp["eps"], g)) + nan_or_zero(x)
    return -(x / d), history


def lbsgd_advance(num_cums: jax.Array, hp: Hyper):
    """LBSGD's ``num_cums``: every call counts, once per step for the whole tree
    (each parameter is called once per step, so all share it)."""
    del hp
    new = num_cums + 1
    return {"num_cums": new}, new


def lbsgd_warmup_mult(num_cums: Any, hp: Hyper) -> Any:
    """``LBSGD._get_lbmult(num_cums)``, the rate multiplier of the warmup
    strategies, with ``nwup = warmup_epochs * updates_per_epoch``::

        batch_scale                                   if num_cums >= nwup
        1                                             elif nwup <= 1
        1 + (batch_scale - 1) * num_cums / nwup       'linear'
        1 + (batch_scale - 1) * num_cums**2 / nwup**2 'power2'
        1 + (batch_scale - 1) * sqrt(num_cums / nwup) 'sqrt'
        1                                             any other strategy

    Python float64 for a concrete count, in MXNet's grouping; float64 (float32
    without x64) on device for a traced one.
    """
    bs, nwup, strategy = hp["batch_scale"], hp["nwup"], hp["warmup_strategy"]
    if _host_scalars(num_cums, bs, nwup):
        nup, bs, nwup = int(num_cums), float(bs), int(nwup)
        if nup >= nwup:
            return bs
        if nwup <= 1:
            return 1.0
        if strategy == "linear":
            return 1.0 + (bs - 1) * nup / nwup
        if strategy == "power2":
            return 1.0 + (bs - 1) * (nup * nup) / (nwup * nwup)
        if strategy == "sqrt":
            return 1.0 + (bs - 1) * math.sqrt(float(nup) / nwup)
        return 1.0
    f = _device_float()
    nup, bs, nwup = jnp.asarray(num_cums, f), jnp.asarray(bs, f), jnp.asarray(nwup, f)
    ramp = {"linear": lambda: 1.0 + (bs - 1) * nup / nwup,
            "power2": lambda: 1.0 + (bs - 1) * (nup * nup) / (nwup * nwup),
            "sqrt": lambda: 1.0 + (bs - 1) * jnp.sqrt(nup / nwup)}.get(strategy)
    mult = jnp.ones((), f) if ramp is None else jnp.where(nwup <= 1, 1.0, ramp())
    return jnp.where(nup >= nwup, bs, mult)


def lbsgd_lars_mult(weight: jax.Array, g: jax.Array, wd: Any,
                    lowest: Optional[jax.Array] = None) -> jax.Array:
    """``LBSGD._get_lars``: ``sqrt(|w|^2 / (|g|^2 + wd * |w|^2 + 1e-18))`` clipped
    to [0.01, 100], on the averaged gradient before rescaling and clipping.
    Concrete arrays (outside ``jax.jit``) are summed as MXNet sums them, with
    NumPy in float32, the rest in Python float64; traced ones with a float32
    ``jnp.sum`` (another order: the last bits may differ), the rest in float64
    where x64 is on. ``lowest``: :func:`rounded`'s constant (the caller's,
    through :func:`apart`: :func:`guard_constants`)."""
    if _host_scalars(weight, g, wd):
        # MXNet's multiply(v, v).asnumpy().sum() (NumPy's float32 sum), then
        # float64 scalars (NumPy 1.x promotes float32 * Python float).
        w2 = float(np.multiply(np.asarray(weight), np.asarray(weight)).sum())
        g2 = float(np.multiply(np.asarray(g), np.asarray(g)).sum())
        return min(max(math.sqrt(w2 / (g2 + _as_host(wd) * w2 + 1e-18)), 0.01), 100.0)
    f = _device_float()
    w2 = jnp.sum(rounded(weight * weight, lowest), dtype=jnp.float32).astype(f)
    g2 = jnp.sum(rounded(g * g, lowest), dtype=jnp.float32).astype(f)
    lars = jnp.sqrt(w2 / (g2 + jnp.asarray(wd, f) * w2 + 1e-18))
    return jnp.clip(lars, 0.01, 100.0)


def _lbsgd_step(grad, weight, cum_grad, mom, hp, finite):
    cum = cum_grad + grad
    bs = hp["batch_scale"]
    num_cums = hp["num_cums"]
    do = num_cums % bs == 0  # a Python bool for a concrete count
    g = divide(cum, operand(float(bs) if _is_python_number(bs) else bs, cum))
    if "lbmult" in hp:  # computed by the caller (the class form, as MXNet's host)
        mult = hp["lbmult"]
    elif hp["warmup_strategy"] == "lars" and _host_scalars(weight, cum_grad, grad):
        mult = lbsgd_lars_mult(weight, g, hp["wd"])
    elif hp["warmup_strategy"] == "lars":
        # The norms get their own g, flat, and their own scalars (apart, as
        # LAMB's u): shared, the division would be written to memory for them.
        own_weight, own_cum, own = apart(weight, cum_grad, dict(
            guard_constants(cum), bs=operand(float(bs) if _is_python_number(bs) else bs, cum)))
        own_g = divide(flat(own_cum) + flat(grad), own["bs"], own["zero"])
        mult = lbsgd_lars_mult(flat(own_weight), own_g, hp["wd"], own["lowest"])
    else:
        mult = lbsgd_warmup_mult(num_cums, hp)
    lr = hp["lr"]
    if _host_scalars(lr, mult):
        lr = _as_host(lr) * _as_host(mult)
    else:
        f = _device_float()
        lr = jnp.asarray(lr, f) * jnp.asarray(mult, f)
    lr_ = hyper(lr, weight)
    if mom is None:
        update = _decayed(weight, None if is_static(hp["wd"], 0.0) else lr_ * hyper(
            hp["wd"], weight), -_scaled_lr_gradient(g, lr_, hp))
        new_mom = None
    else:
        m = rounded(hyper(hp["momentum"], weight) * mom)
        if not is_static(hp["wd"], 0.0):
            m = m - rounded(rounded(lr_ * hyper(hp["wd"], weight)) * weight)
        new_mom = m - _scaled_lr_gradient(g, lr_, hp)
        update = new_mom
    # Loop structure: the division g is computed by one loop only (the
    # buffer's, or the weight's without momentum), whose output the other
    # loops read, so that it is not written to memory for two; and cum_grad's
    # loop runs after the loops that read the old sum (after(), on their
    # output), so that the old sum is not copied first.
    if not v.is_traced(do):
        if not do:
            zero = jnp.zeros_like(weight)
            return (zero, keep_if(finite, cum, cum_grad)) + (() if mom is None else (mom,))
        if mom is not None:
            update = done = new_mom = keep_if(finite, new_mom, mom)
        else:
            done = stored_weight(weight, update, finite)
        new_cum = keep_if(finite, after(jnp.zeros_like(cum), done), cum_grad)
        return (update, new_cum) + (() if mom is None else (new_mom,))
    zero = jnp.zeros((), cum.dtype)
    if mom is not None:
        new_mom = keep_if(finite, jnp.where(do, new_mom, mom), mom)
        update, done = jnp.where(do, new_mom, zero), new_mom
    else:
        update = jnp.where(do, update, zero)
        done = stored_weight(weight, update, finite)
    new_cum = keep_if(finite, after(jnp.where(do, zero, cum), done), cum_grad)
    return (update, new_cum) + (() if mom is None else (new_mom,))


def lbsgd_update(grad: jax.Array, weight: jax.Array, cum_grad: jax.Array, mom: jax.Array,
                 hp: Hyper, finite: Optional[jax.Array] = None):
    """``mx.optimizer.LBSGD.update`` with momentum, for one call::

        cum_grad = cum_grad + grad                 # accumulated since the last update
        if num_cums % batch_scale == 0:            # num_cums counts every call
            g = cum_grad / batch_scale
            lr = lr * lbmult                       # warmup strategy, or 'lars' on (w, g)
            mom = momentum * mom - (lr * wd) * w - lr * clip(rescale_grad * g)
            update = mom                           # sgd_mom_update (SGDMomKernel)
            cum_grad = 0
        else:
            update = 0                             # sgd_update(lr=0): w unchanged

    ``hp["lr"]`` is the rate MXNet read before counting. Returns
    ``(update, cum_grad, mom)``.
    """
    return _lbsgd_step(grad, weight, cum_grad, mom, hp, finite)


def lbsgd_plain_update(grad: jax.Array, weight: jax.Array, cum_grad: jax.Array, hp: Hyper,
                       finite: Optional[jax.Array] = None):
    """:func:`lbsgd_update` with ``momentum=0``: the update is ``sgd_update``'s
    ``(1 - lr * wd) * w - lr * clip(rescale_grad * g)`` minus ``w``. Returns
    ``(update, cum_grad)``."""
    return _lbsgd_step(grad, weight, cum_grad, None, hp, finite)


test_update.__test__ = False  # MXNet's Test optimizer, not a pytest test


# ----------------------------------------------------------------------------------
# LAMB called with one index: lamb_update_phase1/2 and NDArray.norm
# ----------------------------------------------------------------------------------

__all__ += ["lamb_phases_update"]


def lamb_phases_update(grad: jax.Array, weight: jax.Array, mean: jax.Array, var: jax.Array,
                       hp: Hyper, finite: Optional[jax.Array] = None):
    """``lamb_update_phase1`` then ``lamb_update_phase2`` (their ``mp_`` versions
    on the float32 master), what ``mx.optimizer.LAMB.update(index, ...)`` runs
    for one index outside an Updater::

        g = clip(rescale_grad * grad, clip_gradient)
        mean = beta1 * mean + (1 - beta1) * g
        var = beta2 * var + ((1 - beta2) * g) * g
        u = (mean / (1 - beta1**t)) / (sqrt(var / (1 - beta2**t)) + epsilon) + wd * w
            # without bias_correction: mean / (sqrt(var) + epsilon) + wd * w
        r1 = |w|, r2 = |u|                        # NDArray.norm(), after phase 1
        r1 = max(r1, lower_bound); r1 = min(r1, upper_bound)   # each only if set
        lr' = lr if r1 == 0 or r2 == 0 else (lr * r1) / r2
        update = -(lr' * u)

    Unlike :func:`lamb_update` (``multi_lamb_update``, the list call): ``lr``
    and ``wd`` are C++ float fields; ``beta**t`` is ``std::pow(float, int)``, a
    double power rounded to float; ``mean / (1 - beta1**t)`` is a double
    division rounded to float (float32 here: an ulp apart at times); the rest
    of ``u`` is float; ``r1`` is the norm of the weight the kernel runs on (the
    master under multi_precision, not the stored float16 weight); the rate is
    scaled in float. MXNet's ``NDArray.norm`` is a scaled sequential sum
    (:func:`mxopt.reference.nrm2`); here it is ``sqrt(sum(x * x))``, which can
    differ in the last bits. Returns ``(update, mean, var)``.
    """
    g = rescale(grad, hp["rescale_grad"])
    stored = hp.get("stored_dtype")
    if stored is not None and jnp.dtype(stored) != g.dtype:
        # mshadow's half_t * float is a half_t: under multi_precision the
        # rescaled gradient is rounded to float16 before it is clipped.
        g = _stored_value(g, stored).astype(g.dtype)
    g = clip(g, hp["clip_gradient"])
    new_mean = _ema(g, mean, hp["beta1"])
    new_var = mean_square(g, var, hp["beta2"], centered=True)
    u = _lamb_direction(new_mean, new_var, weight, _lamb_scalars(hp, g, wd_field=hyper), root)
    r1 = _lamb_bounded(jnp.sqrt(sum_of_squares(weight)), hp)
    r2 = jnp.sqrt(sum_of_squares(u))
    lr = hyper(hp["lr"], jnp.zeros((), jnp.float32))
    lr = jnp.where((r1 == 0) | (r2 == 0), lr, rounded(lr * r1) / r2).astype(g.dtype)
    # -(x) added to w is exactly MXNet's w - x.
    return (-rounded(lr * u), keep_if(finite, new_mean, mean), keep_if(finite, new_var, var))
