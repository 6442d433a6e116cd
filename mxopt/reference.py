"""NumPy reference of MXNet 1.9.1's RMSProp kernels, evaluated op for op.

``rmsprop_update`` and ``rmspropalex_update`` mirror the C++ kernels
``RMSPropUpdateKernel`` and ``RMSPropAlexUpdateKernel`` (src/operator/optimizer_op-inl.h):
every hyperparameter is first rounded to float32 as MXNet's kernel receives it
(a C++ ``float`` parsed from ``str(value)``), then cast to the weight's dtype,
and every binary operation is rounded in that dtype in the kernel's order. On
float32 this reproduces MXNet's CPU results bit for bit (checked against the
golden data in ``tests/golden``).

This module is the ground truth of the test suite; it is deliberately slow and
plain. It is not used by the JAX code path.

The optimizer family (issue 17) adds a twin per kernel or Python-side update of
SGD, NAG, Signum, Adam, AdaGrad, AdaDelta, Adamax, Nadam, Ftrl and FTML. Those
twins round their hyperparameters the way MXNet 1.9.1 really receives them, which
is not always ``float32(value)``: MXNet's Python front end sends every operator
argument as ``str(value)``, and the C++ side parses it with one of three parsers:

* a C++ ``float`` operator field (``lr``, ``wd``, ``momentum``, ``beta1``, ...,
  of every kernel) goes through dmlc-core's fast ``dmlc::stof``, which is *not*
  correctly rounded: see :func:`kernel_float`;
* a C++ ``double`` field (FTML's ``epsilon``, and the ``scalar`` of NDArray
  scalar operators such as ``grad * 0.5``) goes through ``dmlc::stod``, then is
  cast to the array dtype: see :func:`kernel_double` and :func:`scalar_operand`;
* a ``Tuple<float>`` entry (``multi_sgd_*``'s ``lrs`` and ``wds``) goes through
  ``std::istream``, which is correctly rounded: see :func:`tuple_float`.

Short decimal literals (0.1, 0.9, 1e-8, ...) come out the same every way; rates
computed in Python (a scheduler's ``base_lr * factor**k``, ``lr * lr_mult``,
Adam's bias correction folded into lr) differ from ``float32(value)`` by one ulp
in roughly one case in seven. :func:`hyperparameter`, used by the two RMSProp
twins, is :func:`kernel_float` cast to the weight's dtype.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from mxopt._mxnumbers import (
    kernel_double,
    kernel_float,
    powf,
    received_float,
    scalar_operand,
    tuple_float,
)

__all__ = [
    "rmsprop_update", "rmspropalex_update", "clip_is_on", "hyperparameter",
    # How MXNet 1.9.1 receives a Python number.
    "kernel_float", "kernel_double", "tuple_float", "scalar_operand", "powf",
    # Kernels (src/operator/optimizer_op-inl.h).
    "sgd_update", "sgd_mom_update", "multi_sgd_update", "multi_sgd_mom_update",
    "nag_mom_update", "signsgd_update", "signum_update", "adam_update", "ftml_update",
    "ftrl_update",
    # Python-side updates (python/mxnet/optimizer/optimizer.py, NDArray operators).
    "adagrad_update", "adadelta_update", "adamax_update", "nadam_update",
]


def hyperparameter(value: float, dtype) -> np.ndarray:
    """A Python hyperparameter as an MXNet kernel's C++ ``float`` field receives it
    (``dmlc::stof`` of ``str(value)``: :func:`kernel_float`), cast to ``dtype``.
    A number MXNet's parser refuses (below about 1e-38) is taken as float32, as
    mxopt's kernels take it (``mxopt._mxnumbers.received_float``)."""
    return np.asarray(received_float(value)).astype(dtype)[()]


def clip_is_on(bound: Optional[float]) -> bool:
    """MXNet's Python layer passes a clip bound only when it is truthy, and the
    kernel clips only when the bound it received is >= 0."""
    return bool(bound) and bound >= 0


def _clip(x, bound):
    # mshadow_op::clip: x > b -> b, x < -b -> -b, else x (NaN passes through).
    return np.where(x > bound, bound, np.where(x < -bound, -bound, x)).astype(x.dtype)


def _prepare(weight, grad, *, rescale_grad, wd, clip_gradient):
    dtype = weight.dtype
    if grad.dtype != dtype:
        raise TypeError(f"grad dtype {grad.dtype} differs from weight dtype {dtype}")
    g = hyperparameter(rescale_grad, dtype) * grad + hyperparameter(wd, dtype) * weight
    if clip_is_on(clip_gradient):
        g = _clip(g, hyperparameter(clip_gradient, dtype))
    return g


def rmsprop_update(weight, grad, n, *, lr, gamma1=0.9, epsilon=1e-8, wd=0.0,
                   rescale_grad=1.0, clip_gradient=None, clip_weights=None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Tieleman & Hinton RMSProp step; returns ``(new_weight, new_n)``.

    .. math::
        g &= \\mathrm{clip}(r \\cdot \\nabla + \\lambda w) \\\\
        n &= (1 - \\gamma_1)(g \\cdot g) + \\gamma_1 n \\\\
        w &= \\mathrm{clip}_w\\big(w - \\eta \\, (g / \\sqrt{n + \\epsilon})\\big)
    """
    weight, grad, n = (np.asarray(a) for a in (weight, grad, n))
    dtype = weight.dtype
    with np.errstate(all="ignore"):
        g = _prepare(weight, grad, rescale_grad=rescale_grad, wd=wd, clip_gradient=clip_gradient)
        gamma1 = hyperparameter(gamma1, dtype)
        one_minus_gamma1 = (np.asarray(1.0, dtype) - gamma1).astype(dtype)
        n = one_minus_gamma1 * (g * g) + gamma1 * n
        w = weight - hyperparameter(lr, dtype) * (g / np.sqrt(n + hyperparameter(epsilon, dtype)))
        if clip_is_on(clip_weights):
            w = _clip(w, hyperparameter(clip_weights, dtype))
    return w.astype(dtype), n.astype(dtype)


def rmspropalex_update(weight, grad, n, g_avg, delta, *, lr, gamma1=0.9, gamma2=0.9,
                       epsilon=1e-8, wd=0.0, rescale_grad=1.0, clip_gradient=None,
                       clip_weights=None):
    """Graves' centered RMSProp step; returns ``(new_weight, new_n, new_g_avg, new_delta)``.

    .. math::
        g &= \\mathrm{clip}(r \\cdot \\nabla + \\lambda w) \\\\
        n &= (1 - \\gamma_1) g g + \\gamma_1 n \\\\
        \\bar g &= (1 - \\gamma_1) g + \\gamma_1 \\bar g \\\\
        \\Delta &= \\gamma_2 \\Delta - (\\eta g) / \\sqrt{n - \\bar g^2 + \\epsilon} \\\\
        w &= \\mathrm{clip}_w(w + \\Delta)
    """
    weight, grad, n, g_avg, delta = (np.asarray(a) for a in (weight, grad, n, g_avg, delta))
    dtype = weight.dtype
    with np.errstate(all="ignore"):
        g = _prepare(weight, grad, rescale_grad=rescale_grad, wd=wd, clip_gradient=clip_gradient)
        gamma1 = hyperparameter(gamma1, dtype)
        one_minus_gamma1 = (np.asarray(1.0, dtype) - gamma1).astype(dtype)
        # Grouped as in RMSPropAlexUpdateKernel, which differs from the plain kernel:
        # ((1 - gamma1) * g) * g, and (lr * g) / sqrt(...).
        n = one_minus_gamma1 * g * g + gamma1 * n
        g_avg = one_minus_gamma1 * g + gamma1 * g_avg
        delta = hyperparameter(gamma2, dtype) * delta - (
            hyperparameter(lr, dtype) * g
            / np.sqrt(n - g_avg * g_avg + hyperparameter(epsilon, dtype)))
        w = weight + delta
        if clip_is_on(clip_weights):
            w = _clip(w, hyperparameter(clip_weights, dtype))
    return w.astype(dtype), n.astype(dtype), g_avg.astype(dtype), delta.astype(dtype)


# ---------------------------------------------------------------------------
# How MXNet 1.9.1 receives a Python number
# ---------------------------------------------------------------------------

def _sign(x):
    # mshadow_op::sign and (x > 0) - (x < 0): -1, 0 or 1; 0 for NaN.
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def _clip_op(x, a_min, a_max):
    # The NDArray ``clip`` operator: x > a_max -> a_max, else x < a_min -> a_min, else x.
    return np.where(x > a_max, a_max, np.where(x < a_min, a_min, x)).astype(x.dtype)


def _python_clip(grad, clip_gradient):
    """``clip(grad, -c, c)`` of the Python-side optimizers, applied whenever
    ``clip_gradient is not None`` (so 0 clips every gradient to +-0)."""
    if clip_gradient is None:
        return grad
    dtype = grad.dtype
    a_min = np.asarray(kernel_float(-clip_gradient)).astype(dtype)[()]
    a_max = np.asarray(kernel_float(clip_gradient)).astype(dtype)[()]
    return _clip_op(grad, a_min, a_max)


def _arrays(*arrays):
    arrays = tuple(np.asarray(a) for a in arrays)
    dtype = arrays[0].dtype
    for a in arrays[1:]:
        if a.dtype != dtype:
            raise TypeError(f"array dtype {a.dtype} differs from weight dtype {dtype}")
    return arrays, dtype


def _kernel_clip(x, clip_gradient, dtype, parse=hyperparameter):
    """Kernel clipping: the Python layer passes the bound only when truthy, the
    kernel clips only when it is >= 0. Returns ``None`` when off."""
    if not clip_gradient:
        return None
    bound = parse(clip_gradient, dtype)
    return bound if bound >= 0 else None


# ---------------------------------------------------------------------------
# SGD and NAG
# ---------------------------------------------------------------------------

def sgd_update(weight, grad, *, lr, wd=0.0, rescale_grad=1.0, clip_gradient=None):
    """``sgd_update`` / ``mp_sgd_update`` (``SGDKernel``, ``MP_SGDKernel``); returns
    ``(new_weight,)``.

    NAG with ``momentum=0`` runs this kernel (SGD itself always runs ``multi_sgd_update``,
    which rounds differently: see :func:`multi_sgd_update`).

    .. math::
        w \\leftarrow (1 - \\eta\\lambda)\\, w - \\eta\\, \\mathrm{clip}(r \\nabla)

    Without clipping the last product is grouped ``(\\eta r) \\nabla``.
    """
    (weight, grad), dtype = _arrays(weight, grad)
    p = lambda v: hyperparameter(v, dtype)  # noqa: E731
    one = dtype.type(1)
    lr_, wd_, r = p(lr), p(wd), p(rescale_grad)
    bound = _kernel_clip(grad, clip_gradient, dtype)
    with np.errstate(all="ignore"):
        if bound is not None:
            w = (one - lr_ * wd_) * weight - lr_ * _clip(r * grad, bound)
        else:
            w = (one - lr_ * wd_) * weight - (lr_ * r) * grad
    return (w.astype(dtype),)


def _sgd_mom_core(weight, grad, mom, lr_, wd_, momentum_, r, bound):
    if bound is not None:
        mom = momentum_ * mom - lr_ * wd_ * weight - lr_ * _clip(r * grad, bound)
    else:
        mom = momentum_ * mom - lr_ * wd_ * weight - lr_ * r * grad
    return weight + mom, mom


def sgd_mom_update(weight, grad, mom, *, lr, momentum=0.0, wd=0.0, rescale_grad=1.0,
                   clip_gradient=None):
    """``sgd_mom_update`` (``SGDMomKernel``); returns ``(new_weight, new_mom)``.

    The same arithmetic as :func:`multi_sgd_mom_update`, but ``lr`` and ``wd`` arrive
    as C++ ``float`` fields (:func:`kernel_float`) instead of ``Tuple<float>``
    entries. None of the ten optimizers calls it on dense arrays (SGD always
    aggregates into ``multi_sgd_mom_update``); it is here for completeness.

    .. math::
        m &\\leftarrow \\mu m - (\\eta\\lambda) w - \\eta\\, \\mathrm{clip}(r \\nabla) \\\\
        w &\\leftarrow w + m
    """
    (weight, grad, mom), dtype = _arrays(weight, grad, mom)
    p = lambda v: hyperparameter(v, dtype)  # noqa: E731
    with np.errstate(all="ignore"):
        w, m = _sgd_mom_core(weight, grad, mom, p(lr), p(wd), p(momentum), p(rescale_grad),
                             _kernel_clip(grad, clip_gradient, dtype))
    return w.astype(dtype), m.astype(dtype)


def multi_sgd_mom_update(weight, grad, mom, *, lr, momentum, wd=0.0, rescale_grad=1.0,
                         clip_gradient=None):
    """One weight of ``multi_sgd_mom_update`` / ``multi_mp_sgd_mom_update``
    (``MultiSGDKernel``), what ``mx.optimizer.SGD`` runs with ``momentum > 0``;
    returns ``(new_weight, new_mom)``.

    ``lr`` and ``wd`` are ``Tuple<float>`` entries (:func:`tuple_float`, correctly
    rounded); ``momentum``, ``rescale_grad`` and ``clip_gradient`` are C++ floats
    (:func:`kernel_float`). Under multi_precision, pass the float32 master and the
    gradient cast to float32; the float16 weight is the result cast.

    .. math::
        m &\\leftarrow ((\\mu m - (\\eta\\lambda) w) - \\eta\\, \\mathrm{clip}(r \\nabla)) \\\\
        w &\\leftarrow w + m

    Without clipping the last term is ``(\\eta r) \\nabla``.
    """
    (weight, grad, mom), dtype = _arrays(weight, grad, mom)
    lr_ = np.asarray(tuple_float(lr)).astype(dtype)[()]
    wd_ = np.asarray(tuple_float(wd)).astype(dtype)[()]
    p = lambda v: hyperparameter(v, dtype)  # noqa: E731
    with np.errstate(all="ignore"):
        w, m = _sgd_mom_core(weight, grad, mom, lr_, wd_, p(momentum), p(rescale_grad),
                             _kernel_clip(grad, clip_gradient, dtype))
    return w.astype(dtype), m.astype(dtype)


def multi_sgd_update(weight, grad, *, lr, wd=0.0, rescale_grad=1.0, clip_gradient=None):
    """One weight of ``multi_sgd_update`` / ``multi_mp_sgd_update``, what
    ``mx.optimizer.SGD`` runs with ``momentum=0``; returns ``(new_weight,)``.

    The momentum kernel with ``momentum = 0`` and a zero buffer, so it rounds as
    ``w + ((0 - (\\eta\\lambda) w) - \\eta\\,\\mathrm{clip}(r\\nabla))``, not as
    :func:`sgd_update`'s ``(1 - \\eta\\lambda) w - ...``.
    """
    (weight, grad), dtype = _arrays(weight, grad)
    zero = np.zeros_like(weight)
    w, _ = multi_sgd_mom_update(weight, grad, zero, lr=lr, momentum=0.0, wd=wd,
                                rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    return (w,)


def nag_mom_update(weight, grad, mom, *, lr, momentum, wd=0.0, rescale_grad=1.0,
                   clip_gradient=None):
    """``nag_mom_update`` / ``mp_nag_mom_update`` (``NAGMomKernel``); returns
    ``(new_weight, new_mom)``. NAG with ``momentum=0`` runs :func:`sgd_update`.

    .. math::
        m_0 &= \\mu m \\\\
        w' &= (w - m_0) + (\\mu + 1)\\,(m_0 - \\eta\\,(\\mathrm{clip}(r\\nabla) + \\lambda w)) \\\\
        m &\\leftarrow m_0 - \\eta\\,(\\mathrm{clip}(r\\nabla) + \\lambda w')

    The buffer's decay term reads the *new* weight ``w'``: the kernel writes its
    output, which aliases ``weight``, before it updates ``mom`` (the float16 kernel
    does the same with its master copy).
    """
    (weight, grad, mom), dtype = _arrays(weight, grad, mom)
    p = lambda v: hyperparameter(v, dtype)  # noqa: E731
    lr_, mu, wd_, r = p(lr), p(momentum), p(wd), p(rescale_grad)
    bound = _kernel_clip(grad, clip_gradient, dtype)
    with np.errstate(all="ignore"):
        g = _clip(r * grad, bound) if bound is not None else r * grad
        m0 = mu * mom
        w = weight - m0 + (mu + dtype.type(1)) * (m0 - lr_ * (g + wd_ * weight))
        m = m0 - lr_ * (g + wd_ * w)
    return w.astype(dtype), m.astype(dtype)


# ---------------------------------------------------------------------------
# Signum
# ---------------------------------------------------------------------------

def signsgd_update(weight, grad, *, lr, wd=0.0, rescale_grad=1.0, clip_gradient=None):
    """``signsgd_update`` (``SignSGDKernel``), Signum with ``momentum=0``; returns
    ``(new_weight,)``.

    .. math::
        w \\leftarrow (1 - \\eta\\lambda)\\, w - \\eta\\, \\mathrm{sign}(\\nabla)

    ``rescale_grad`` and ``clip_gradient`` are accepted and ignored, as the kernel
    does; ``wd`` acts as decoupled decay; ``sign(0) = 0``.
    """
    (weight, grad), dtype = _arrays(weight, grad)
    p = lambda v: hyperparameter(v, dtype)  # noqa: E731
    lr_, wd_ = p(lr), p(wd)
    with np.errstate(all="ignore"):
        w = (dtype.type(1) - lr_ * wd_) * weight - lr_ * _sign(grad)
    return (w.astype(dtype),)


def signum_update(weight, grad, mom, *, lr, momentum, wd=0.0, rescale_grad=1.0,
                  clip_gradient=None, wd_lh=0.0):
    """``signum_update`` (``SignumKernel``); returns ``(new_weight, new_mom)``.

    .. math::
        m &\\leftarrow (\\mu m - ((1-\\mu)\\lambda) w) - (1-\\mu)\\,\\mathrm{clip}(r\\nabla) \\\\
        w &\\leftarrow (1 - \\eta\\lambda_{lh})\\, w + \\eta\\, \\mathrm{sign}(m)

    ``m`` holds the negated moving average. Without clipping the last term is
    ``((1-\\mu) r) \\nabla``.
    """
    (weight, grad, mom), dtype = _arrays(weight, grad, mom)
    p = lambda v: hyperparameter(v, dtype)  # noqa: E731
    one = dtype.type(1)
    lr_, mu, wd_, r, wd_lh_ = p(lr), p(momentum), p(wd), p(rescale_grad), p(wd_lh)
    bound = _kernel_clip(grad, clip_gradient, dtype)
    with np.errstate(all="ignore"):
        if bound is not None:
            m = mu * mom - (one - mu) * wd_ * weight - (one - mu) * _clip(r * grad, bound)
        else:
            m = mu * mom - (one - mu) * wd_ * weight - (one - mu) * r * grad
        w = (one - lr_ * wd_lh_) * weight + lr_ * _sign(m)
    return w.astype(dtype), m.astype(dtype)


# ---------------------------------------------------------------------------
# Adam, FTML, Ftrl (kernels)
# ---------------------------------------------------------------------------

def adam_update(weight, grad, mean, var, *, lr, t, beta1=0.9, beta2=0.999, epsilon=1e-8,
                wd=0.0, rescale_grad=1.0, clip_gradient=None):
    """``mx.optimizer.Adam``'s step: bias correction in Python, then ``adam_update``
    (``AdamUpdateKernel``); returns ``(new_weight, new_mean, new_var)``.

    ``lr`` is the optimizer's rate for this parameter (scheduler and ``lr_mult``
    applied) and ``t`` its update count (``begin_num_update`` included). In Python
    float64: ``lr * (sqrt(1 - beta2**t) / (1 - beta1**t))``; then, in the kernel:

    .. math::
        g &= \\mathrm{clip}(\\nabla r + w \\lambda) \\\\
        m &\\leftarrow \\beta_1 m + (1 - \\beta_1) g \\\\
        v &\\leftarrow \\beta_2 v + ((1 - \\beta_2) g) g \\\\
        w &\\leftarrow w - (\\hat\\eta m) / (\\sqrt{v} + \\epsilon)
    """
    (weight, grad, mean, var), dtype = _arrays(weight, grad, mean, var)
    coef1 = 1. - beta1 ** t
    coef2 = 1. - beta2 ** t
    lr = lr * (math.sqrt(coef2) / coef1)
    p = lambda v: hyperparameter(v, dtype)  # noqa: E731
    one = dtype.type(1)
    b1, b2, eps, lr_ = p(beta1), p(beta2), p(epsilon), p(lr)
    with np.errstate(all="ignore"):
        g = grad * p(rescale_grad) + weight * p(wd)
        bound = _kernel_clip(g, clip_gradient, dtype)
        if bound is not None:
            g = _clip(g, bound)
        mean = b1 * mean + (one - b1) * g
        var = b2 * var + (one - b2) * g * g
        w = weight - lr_ * mean / (np.sqrt(var) + eps)
    return w.astype(dtype), mean.astype(dtype), var.astype(dtype)


def ftml_update(weight, grad, d, v, z, *, lr, t, beta1=0.6, beta2=0.999, epsilon=1e-8,
                wd=0.0, rescale_grad=1.0, clip_gradient=None):
    """``ftml_update`` (``FTMLKernel``); returns ``(new_weight, new_d, new_v, new_z)``.

    ``t`` is the parameter's update count (``begin_num_update`` included), cast to
    the dtype; the powers are C ``powf`` (:func:`powf`); ``epsilon`` is a C++
    ``double`` field (:func:`kernel_double`), ``clip_gradient`` is passed as the
    kernel's ``clip_grad``.

    .. math::
        g &= \\mathrm{clip}(r\\nabla + \\lambda w) \\\\
        v &\\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        d_t &= ((1 - \\beta_1^t) / \\eta)\\, (\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon) \\\\
        z &\\leftarrow (\\beta_1 z + (1-\\beta_1) g) - (d_t - \\beta_1 d) w \\\\
        d &\\leftarrow d_t, \\quad w \\leftarrow -z / d_t
    """
    (weight, grad, d, v, z), dtype = _arrays(weight, grad, d, v, z)
    p = lambda x: hyperparameter(x, dtype)  # noqa: E731
    one = dtype.type(1)
    lr_, b1, b2, r, wd_ = p(lr), p(beta1), p(beta2), p(rescale_grad), p(wd)
    eps = np.asarray(kernel_double(epsilon)).astype(dtype)[()]
    t_ = dtype.type(t)
    if dtype == np.float32:
        pow1, pow2 = powf(b1, t_), powf(b2, t_)
    else:
        pow1, pow2 = np.power(b1, t_), np.power(b2, t_)
    with np.errstate(all="ignore"):
        g = r * grad + wd_ * weight
        bound = _kernel_clip(g, clip_gradient, dtype)
        if bound is not None:
            g = _clip(g, bound)
        v = b2 * v + (one - b2) * (g * g)
        d_t = (one - pow1) / lr_ * (np.sqrt(v / (one - pow2)) + eps)
        z = b1 * z + (one - b1) * g - (d_t - b1 * d) * weight
        w = -z / d_t
    return w.astype(dtype), d_t.astype(dtype), v.astype(dtype), z.astype(dtype)


def ftrl_update(weight, grad, z, n, *, lr, lamda1=0.01, beta=1, wd=0.0, rescale_grad=1.0,
                clip_gradient=None):
    """``ftrl_update`` (``FtrlUpdateKernel``); returns ``(new_weight, new_z, new_n)``.

    .. math::
        g &= \\mathrm{clip}(\\nabla r) \\\\
        z &\\leftarrow z + (g - ((\\sqrt{n + g^2} - \\sqrt{n})\\, w) / \\eta) \\\\
        n &\\leftarrow n + g^2 \\\\
        w &\\leftarrow ((\\mathrm{sign}(z)\\lambda_1 - z)
              / ((\\beta + \\sqrt{n}) / \\eta + \\lambda)) \\cdot [\\,|z| > \\lambda_1]

    The old weight enters only through ``z``.
    """
    (weight, grad, z, n), dtype = _arrays(weight, grad, z, n)
    p = lambda x: hyperparameter(x, dtype)  # noqa: E731
    lr_, l1, beta_, wd_ = p(lr), p(lamda1), p(beta), p(wd)
    with np.errstate(all="ignore"):
        g = grad * p(rescale_grad)
        bound = _kernel_clip(g, clip_gradient, dtype)
        if bound is not None:
            g = _clip(g, bound)
        z = z + (g - (np.sqrt(n + g * g) - np.sqrt(n)) * weight / lr_)
        n = n + g * g
        w = ((_sign(z) * l1 - z) / ((beta_ + np.sqrt(n)) / lr_ + wd_)
             * (np.abs(z) > l1).astype(dtype))
    return w.astype(dtype), z.astype(dtype), n.astype(dtype)


# ---------------------------------------------------------------------------
# Python-side optimizers: one NDArray operator at a time
# ---------------------------------------------------------------------------

def adagrad_update(weight, grad, history, *, lr, eps=1e-7, wd=0.0, rescale_grad=1.0,
                   clip_gradient=None):
    """``mx.optimizer.AdaGrad.update`` on dense arrays; returns ``(new_weight, new_history)``.

    NDArray operators, each scalar a :func:`scalar_operand`; clipping whenever
    ``clip_gradient is not None``:

    .. math::
        g &= \\mathrm{clip}(\\nabla r) \\\\
        h &\\leftarrow h + g^2 \\\\
        w &\\leftarrow w + (g / \\sqrt{h + \\epsilon} + w\\lambda)\\,(-\\eta)
    """
    (weight, grad, history), dtype = _arrays(weight, grad, history)
    s = lambda x: scalar_operand(x, dtype)  # noqa: E731
    with np.errstate(all="ignore"):
        g = _python_clip(grad * s(rescale_grad), clip_gradient)
        history = history + g * g
        div = g / np.sqrt(history + s(eps))
        w = weight + (div + weight * s(wd)) * s(-lr)
    return w.astype(dtype), history.astype(dtype)


def adadelta_update(weight, grad, acc_g, acc_delta, *, lr=None, rho=0.9, epsilon=1e-5,
                    wd=0.0, rescale_grad=1.0, clip_gradient=None):
    """``mx.optimizer.AdaDelta.update``; returns ``(new_weight, new_acc_g, new_acc_delta)``.

    ``lr`` is accepted and ignored: AdaDelta never reads the learning rate.
    ``1 - rho`` is computed in Python float64, then sent as a scalar operand.

    .. math::
        g &= \\mathrm{clip}(\\nabla r) \\\\
        a_g &\\leftarrow a_g \\rho + ((1-\\rho) g) g \\\\
        \\delta &= (\\sqrt{a_\\delta + \\epsilon} / \\sqrt{a_g + \\epsilon})\\, g \\\\
        a_\\delta &\\leftarrow a_\\delta \\rho + ((1-\\rho) \\delta) \\delta \\\\
        w &\\leftarrow w - (\\delta + w \\lambda)

    (MXNet also scales the caller's gradient array in place by ``rescale_grad``.)
    """
    del lr
    (weight, grad, acc_g, acc_delta), dtype = _arrays(weight, grad, acc_g, acc_delta)
    s = lambda x: scalar_operand(x, dtype)  # noqa: E731
    with np.errstate(all="ignore"):
        g = _python_clip(grad * s(rescale_grad), clip_gradient)
        acc_g = acc_g * s(rho)
        acc_g = acc_g + s(1. - rho) * g * g
        delta = np.sqrt(acc_delta + s(epsilon)) / np.sqrt(acc_g + s(epsilon)) * g
        acc_delta = acc_delta * s(rho)
        acc_delta = acc_delta + s(1. - rho) * delta * delta
        w = weight - (delta + weight * s(wd))
    return w.astype(dtype), acc_g.astype(dtype), acc_delta.astype(dtype)


def adamax_update(weight, grad, m, u, *, lr, t, beta1=0.9, beta2=0.999, wd=0.0,
                  rescale_grad=1.0, clip_gradient=None):
    """``mx.optimizer.Adamax.update``; returns ``(new_weight, new_m, new_u)``.

    In Python float64: ``lr / (1 - beta1**t)``; then NDArray operators:

    .. math::
        g &= \\mathrm{clip}(\\nabla r + w\\lambda) \\\\
        m &\\leftarrow m\\beta_1 + (1-\\beta_1) g \\\\
        u &\\leftarrow \\max(u\\beta_2, |g|) \\\\
        w &\\leftarrow w - (\\hat\\eta m) / u

    ``0 / 0 = NaN`` wherever ``u`` is still 0 (``clip_gradient=0`` gives NaN everywhere).
    """
    (weight, grad, m, u), dtype = _arrays(weight, grad, m, u)
    s = lambda x: scalar_operand(x, dtype)  # noqa: E731
    lr = lr / (1. - beta1 ** t)
    with np.errstate(all="ignore"):
        g = _python_clip(grad * s(rescale_grad) + weight * s(wd), clip_gradient)
        m = m * s(beta1)
        m = m + s(1. - beta1) * g
        u = np.maximum(u * s(beta2), np.abs(g))
        w = weight - s(lr) * m / u
    return w.astype(dtype), m.astype(dtype), u.astype(dtype)


def nadam_update(weight, grad, m, v, *, lr, t, m_schedule, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, schedule_decay=0.004, wd=0.0, rescale_grad=1.0,
                 clip_gradient=None):
    """``mx.optimizer.Nadam.update``; returns ``(new_weight, new_m, new_v, new_m_schedule)``.

    ``m_schedule`` is the optimizer-wide Python float (1.0 at construction) that
    *every* update call of *every* parameter multiplies by ``mu_t``; pass the value
    left by the previous call. The schedule scalars are Python float64:

    .. math::
        \\mu_t &= \\beta_1 (1 - 0.5 \\cdot 0.96^{t\\,\\psi}), \\quad
        \\mu_{t+1} = \\beta_1 (1 - 0.5 \\cdot 0.96^{(t+1)\\psi}) \\\\
        S &\\leftarrow S \\mu_t, \\quad S' = S \\mu_{t+1}

    then NDArray operators (each scalar a :func:`scalar_operand`):

    .. math::
        g &= \\mathrm{clip}(\\nabla r + w\\lambda) \\\\
        m &\\leftarrow m\\beta_1 + (1-\\beta_1) g, \\quad
        v \\leftarrow v\\beta_2 + ((1-\\beta_2) g) g \\\\
        \\bar m &= (1-\\mu_t)\\,(g / (1 - S)) + \\mu_{t+1}\\,(m / (1 - S')) \\\\
        w &\\leftarrow w - (\\eta \\bar m) / (\\sqrt{v / (1 - \\beta_2^t)} + \\epsilon)
    """
    (weight, grad, m, v), dtype = _arrays(weight, grad, m, v)
    s = lambda x: scalar_operand(x, dtype)  # noqa: E731
    momentum_t = beta1 * (1. - 0.5 * (pow(0.96, t * schedule_decay)))
    momentum_t_1 = beta1 * (1. - 0.5 * (pow(0.96, (t + 1) * schedule_decay)))
    m_schedule = m_schedule * momentum_t
    m_schedule_next = m_schedule * momentum_t_1
    with np.errstate(all="ignore"):
        g = _python_clip(grad * s(rescale_grad) + weight * s(wd), clip_gradient)
        m = m * s(beta1)
        m = m + s(1. - beta1) * g
        v = v * s(beta2)
        v = v + s(1. - beta2) * g * g
        g_prime = g / s(1. - m_schedule)
        m_prime = m / s(1. - m_schedule_next)
        v_prime = v / s(1. - pow(beta2, t))
        m_bar = s(1. - momentum_t) * g_prime + s(momentum_t_1) * m_prime
        w = weight - s(lr) * m_bar / (np.sqrt(v_prime) + s(epsilon))
    return w.astype(dtype), m.astype(dtype), v.astype(dtype), m_schedule


# ---------------------------------------------------------------------------
# LARS and LAMB (src/operator/contrib: multi_sum_sq, multi_lars,
# preloaded_multi_sgd, multi_lamb)
# ---------------------------------------------------------------------------

__all__ += ["multi_sum_sq", "multi_lars", "preloaded_multi_sgd_update",
            "preloaded_multi_sgd_mom_update", "multi_lamb_update"]


def multi_sum_sq(x) -> np.float32:
    """One array of ``multi_sum_sq`` on CPU: ``float sum = 0; sum += x[j] * x[j]``
    over the flat array in order, each product rounded in ``x``'s dtype (a float16
    product is a float16) and added to a float32 accumulator.

    ``np.cumsum`` accumulates sequentially in its dtype, as the C++ loop does
    (``np.sum`` would sum pairwise, which rounds differently)."""
    x = np.asarray(x).ravel()
    if x.size == 0:
        return np.float32(0)
    with np.errstate(all="ignore"):
        return np.cumsum((x * x).astype(np.float32), dtype=np.float32)[-1]


def multi_lars(lr, w_sum_sq, g_sum_sq, wd, *, eta, eps, rescale_grad=1.0) -> np.float32:
    """One entry of ``multi_lars`` (``MultiLARSKernel``): the rate of a LARS layer.
    ``lr`` and ``wd`` arrive in float32 arrays (``mx.nd.array(..., dtype=
    'float32')``: correctly rounded), ``eta``, ``eps`` and ``rescale_grad`` as C++
    ``float`` fields (:func:`kernel_float`); all float32:

    .. math::
        \\eta' = \\frac{\\eta\\, \\mathrm{eta}\\, \\|w\\|}
                      {\\sqrt{s_g}\\, r + \\lambda \\|w\\| + \\epsilon}
        \\quad\\text{if } \\|w\\| > 0 \\text{ and } s_g > 0, \\text{ else } \\eta
    """
    lr, wd = np.float32(lr), np.float32(wd)
    w_norm = np.sqrt(np.float32(w_sum_sq))
    g_sum_sq = np.float32(g_sum_sq)
    if not (w_norm > 0 and g_sum_sq > 0):
        return lr
    f = lambda v: hyperparameter(v, np.float32)  # noqa: E731
    with np.errstate(all="ignore"):
        return np.float32(lr * f(eta) * w_norm
                          / (np.sqrt(g_sum_sq) * f(rescale_grad) + wd * w_norm + f(eps)))


def preloaded_multi_sgd_mom_update(weight, grad, mom, *, lr, momentum, wd=0.0,
                                   rescale_grad=1.0, clip_gradient=None):
    """One weight of ``preloaded_multi_sgd_mom_update`` / ``preloaded_multi_mp_sgd_mom_update``
    (what ``mx.optimizer.LARS`` runs with ``momentum > 0``): :func:`multi_sgd_mom_update`'s
    arithmetic, with ``lr`` and ``wd`` read from float32 arrays (pass the float32 rate
    :func:`multi_lars` computed); returns ``(new_weight, new_mom)``."""
    return multi_sgd_mom_update(weight, grad, mom, lr=np.float32(lr), momentum=momentum,
                                wd=np.float32(wd), rescale_grad=rescale_grad,
                                clip_gradient=clip_gradient)


def preloaded_multi_sgd_update(weight, grad, *, lr, wd=0.0, rescale_grad=1.0,
                               clip_gradient=None):
    """``preloaded_multi_sgd_update`` / ``preloaded_multi_mp_sgd_update`` (LARS with
    ``momentum=0``): :func:`multi_sgd_update` with float32 ``lr`` and ``wd``;
    returns ``(new_weight,)``."""
    return multi_sgd_update(weight, grad, lr=np.float32(lr), wd=np.float32(wd),
                            rescale_grad=rescale_grad, clip_gradient=clip_gradient)


def _lamb_operands(weight, grad, mean, var, weight32):
    """LAMB's arrays in the dtype its kernels compute in (float32 on the master
    ``weight32`` under multi_precision, else the weight's): ``(weight, grad,
    dtype, ctype, w, mean, var)``."""
    (weight, grad), dtype = _arrays(weight, grad)
    ctype = np.dtype(np.float32) if weight32 is not None else dtype
    w = np.asarray(weight32 if weight32 is not None else weight).astype(ctype)
    return (weight, grad, dtype, ctype, w, np.asarray(mean).astype(ctype),
            np.asarray(var).astype(ctype))


def multi_lamb_update(weight, grad, mean, var, *, lr, t, wd=0.0, beta1=0.9, beta2=0.999,
                      epsilon=1e-6, rescale_grad=1.0, clip_gradient=None, lower_bound=None,
                      upper_bound=None, bias_correction=True, weight32=None):
    """One tensor of ``multi_lamb_update`` (``MultiLAMBKernelStep1/2``), what
    ``mx.optimizer.LAMB`` runs through its Updater; returns ``(new_weight, new_mean,
    new_var)``, plus the new master with ``weight32`` (``multi_mp_lamb_update``:
    the arithmetic is float32 on the master, and ``r1`` is the norm of the float16
    ``weight``).

    ``lr``, ``wd`` are ``Tuple<float>`` entries (:func:`tuple_float`), ``t`` this
    tensor's update count; the powers are float32 :func:`powf`:

    .. math::
        r_1 &= \\|w\\| \\quad (\\text{the stored weight, before the step}) \\\\
        g &= \\mathrm{clip}(r\\nabla) \\\\
        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + ((1-\\beta_2) g) g \\\\
        u &= \\frac{m / (1-\\beta_1^t)}{\\sqrt{v / (1-\\beta_2^t)} + \\epsilon} + \\lambda w
        \\quad (\\text{in double, rounded once}), \\quad r_2 = \\|u\\| \\\\
        w &\\leftarrow w - (\\eta\\, r_1 / r_2)\\, u

    with ``r1`` clamped to ``[lower_bound, upper_bound]`` (each only if truthy,
    as the Python layer passes them) and the ratio 1 where ``r1`` or ``r2`` is 0.
    """
    weight, grad, dtype, ctype, w, mean, var = _lamb_operands(weight, grad, mean, var,
                                                              weight32)
    p = lambda v: hyperparameter(v, ctype)  # noqa: E731
    one = ctype.type(1)
    r1 = np.sqrt(multi_sum_sq(weight))
    b1, b2 = p(beta1), p(beta2)
    with np.errstate(all="ignore"):
        g = grad.astype(ctype) * p(rescale_grad)
        bound = _kernel_clip(g, clip_gradient, ctype)
        if bound is not None:
            g = _clip(g, bound)
        mean = (b1 * mean + (one - b1) * g).astype(ctype)
        var = (b2 * var + (one - b2) * g * g).astype(ctype)
        if bias_correction:
            b1_t = powf(np.float32(received_float(beta1)), np.float32(t)).astype(ctype)
            b2_t = powf(np.float32(received_float(beta2)), np.float32(t)).astype(ctype)
            mean_hat, var_hat = mean / (one - b1_t), var / (one - b2_t)
        else:
            mean_hat, var_hat = mean, var
        # The kernel's unqualified ``sqrt`` is C's double sqrt: the rest of the
        # expression is evaluated in double and rounded once, when it is stored.
        f64 = np.float64
        decay = (np.asarray(tuple_float(wd)).astype(ctype) * w).astype(f64)
        u = (mean_hat.astype(f64) / (np.sqrt(var_hat.astype(f64)) + f64(p(epsilon)))
             + decay).astype(ctype).astype(np.float32)
        r2 = np.sqrt(multi_sum_sq(u))
        # Passed only when truthy; the kernel applies a bound only when >= 0.
        if lower_bound and lower_bound >= 0:
            r1 = np.maximum(r1, hyperparameter(lower_bound, np.float32))
        if upper_bound and upper_bound >= 0:
            r1 = np.minimum(r1, hyperparameter(upper_bound, np.float32))
        ratio = np.float32(1) if (r1 == 0 or r2 == 0) else np.float32(r1 / r2)
        lr_adjusted = np.asarray(tuple_float(lr)).astype(ctype) * ratio.astype(ctype)
        w = (w - lr_adjusted * u.astype(ctype)).astype(ctype)
    if weight32 is not None:
        return w.astype(dtype), mean, var, w
    return w, mean, var


# ---------------------------------------------------------------------------
# Test, DCASGD, SGLD, GroupAdaGrad, LBSGD (issue 18; ccSGD runs SGD's kernels)
# ---------------------------------------------------------------------------

__all__ += ["test_update", "dcasgd_update", "sgld_update", "group_adagrad_update",
            "lbsgd_update"]


def test_update(weight, grad, weight_copy, *, rescale_grad=1.0):
    """``mx.optimizer.Test.update``; returns ``(new_weight, new_weight_copy)``.

    .. math::
        w \\leftarrow w + \\nabla r, \\quad \\mathrm{copy} \\leftarrow w \\ (\\text{float32})
    """
    (weight, grad), dtype = _arrays(weight, grad)
    with np.errstate(all="ignore"):
        w = (weight + grad * scalar_operand(rescale_grad, dtype)).astype(dtype)
    return w, w.astype(np.asarray(weight_copy).dtype)


def dcasgd_update(weight, grad, weight_previous, *, lr, lamda=0.04, wd=0.0, rescale_grad=1.0,
                  clip_gradient=None):
    """``mx.optimizer.DCASGD.update`` with ``momentum=0`` (NDArray operators, each
    scalar a :func:`scalar_operand`); returns ``(new_weight, new_weight_previous)``.

    .. math::
        g &= \\mathrm{clip}(\\nabla r) \\\\
        w &\\leftarrow w + ((g + \\lambda w) + ((\\lambda_{dc} g) g)(w - w_{prev}))(-\\eta),
        \\quad w_{prev} \\leftarrow w_{old}
    """
    (weight, grad, weight_previous), dtype = _arrays(weight, grad, weight_previous)
    s = lambda x: scalar_operand(x, dtype)  # noqa: E731
    with np.errstate(all="ignore"):
        g = _python_clip(grad * s(rescale_grad), clip_gradient)
        mom = ((g + weight * s(wd)) + ((g * s(lamda)) * g) * (weight - weight_previous)) * s(-lr)
        w = weight + mom
    return w.astype(dtype), weight.copy()


def sgld_update(weight, grad, noise, *, lr, wd=0.0, rescale_grad=1.0, clip_gradient=None):
    """``mx.optimizer.SGLD.update`` with the noise given (MXNet draws ``noise`` from
    ``normal(0, sqrt(lr))``); returns ``(new_weight,)``.

    .. math::
        g = \\mathrm{clip}(\\nabla r), \\quad
        w \\leftarrow (w + (g + \\lambda w)(-\\eta / 2)) + \\mathrm{noise}
    """
    (weight, grad, noise), dtype = _arrays(weight, grad, noise)
    s = lambda x: scalar_operand(x, dtype)  # noqa: E731
    with np.errstate(all="ignore"):
        g = _python_clip(grad * s(rescale_grad), clip_gradient)
        w = (weight + (g + weight * s(wd)) * s(-lr / 2)).astype(dtype)
        w = w + noise
    return (w.astype(dtype),)


def _kahan_row_mean(x):
    # mshadow's red::sum (Kahan compensation, left to right), then / n: MXNet's mean.
    dtype = x.dtype
    out = np.empty((x.shape[0], 1), dtype)
    for i, row in enumerate(x):
        total, residual = dtype.type(0), dtype.type(0)
        for value in row:
            y = dtype.type(value - residual)
            t = dtype.type(total + y)
            residual = dtype.type(dtype.type(t - total) - y)
            total = t
        out[i, 0] = total / dtype.type(x.shape[1])
    return out


def group_adagrad_update(weight, grad, history, *, lr, eps=1e-5, rescale_grad=1.0,
                         clip_gradient=None):
    """``mx.optimizer.contrib.GroupAdaGrad.update`` on dense 2-D arrays; returns
    ``(new_weight, new_history)``; ``history`` has shape ``(rows, 1)``.

    .. math::
        g &= \\mathrm{clip}(\\nabla r) \\\\
        h &\\leftarrow h + \\mathrm{mean}(g^2, \\mathrm{axis}=1) \\\\
        w &\\leftarrow w - (\\eta g) / \\sqrt{h + \\epsilon}
    """
    (weight, grad, history), dtype = _arrays(weight, grad, history)
    s = lambda x: scalar_operand(x, dtype)  # noqa: E731
    with np.errstate(all="ignore"):
        g = _python_clip(grad * s(rescale_grad), clip_gradient)
        history = (history + _kahan_row_mean((g * g).astype(dtype))).astype(dtype)
        w = weight - (g * s(lr)) / np.sqrt(history + s(eps))
    return w.astype(dtype), history


def _lbsgd_mult(weight, g, wd, num_cums, *, batch_scale, warmup_strategy, nwup):
    if warmup_strategy == "lars":
        # multiply(v, v).asnumpy().sum(): a float32 NumPy sum, then float64 scalars
        # (NumPy 1.x promotes float32 scalar * Python float to float64).
        w2 = float(np.multiply(weight, weight).sum())
        g2 = float(np.multiply(g, g).sum())
        return min(max(math.sqrt(w2 / (g2 + wd * w2 + 1e-18)), 0.01), 100.0)
    maxmult = float(batch_scale)
    if num_cums >= nwup:
        return maxmult
    if nwup <= 1:
        return 1.0
    if warmup_strategy == "linear":
        return 1.0 + (maxmult - 1) * num_cums / nwup
    if warmup_strategy == "power2":
        return 1.0 + (maxmult - 1) * (num_cums * num_cums) / (nwup * nwup)
    if warmup_strategy == "sqrt":
        return 1.0 + (maxmult - 1) * math.sqrt(float(num_cums) / nwup)
    return 1.0


def lbsgd_update(weight, grad, mom, cum_grad, *, lr, num_cums, momentum=0.0, batch_scale=1,
                 warmup_strategy="linear", warmup_epochs=5, updates_per_epoch=32, wd=0.0,
                 rescale_grad=1.0, clip_gradient=None):
    """One ``mx.optimizer.LBSGD.update`` call after the caller's counting:
    ``lr`` is the rate read before counting, ``num_cums`` this call's count
    (``begin_epoch * updates_per_epoch + calls``), ``cum_grad`` the sum since
    the last update (None on the first call). Returns ``(new_weight, new_mom,
    new_cum_grad)`` (``mom`` None without momentum).

    Every ``batch_scale``-th call: ``g = cum_grad / batch_scale``, ``lr *=
    lbmult`` and :func:`sgd_mom_update` (:func:`sgd_update` without momentum);
    the other calls run ``sgd_update`` with ``lr=0``.
    """
    (weight, grad), dtype = _arrays(weight, grad)
    with np.errstate(all="ignore"):
        cum = grad.copy() if cum_grad is None else (cum_grad + grad).astype(dtype)
        if num_cums % batch_scale:
            (w,) = sgd_update(weight, grad, lr=0.0, wd=wd)
            return w, mom, cum
        g = (cum / scalar_operand(float(batch_scale), dtype)).astype(dtype)
    lr = lr * _lbsgd_mult(weight, g, wd, num_cums, batch_scale=batch_scale,
                          warmup_strategy=warmup_strategy,
                          nwup=warmup_epochs * updates_per_epoch)
    common = dict(lr=lr, wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient)
    if mom is not None:
        w, mom = sgd_mom_update(weight, g, mom, momentum=momentum, **common)
    else:
        (w,) = sgd_update(weight, g, **common)
    return w, mom, np.zeros_like(cum)


test_update.__test__ = False  # MXNet's Test optimizer, not a pytest test


# ---------------------------------------------------------------------------
# LAMB called with one index: lamb_update_phase1/2 and NDArray.norm
# ---------------------------------------------------------------------------

__all__ += ["nrm2", "lamb_update_phase1", "lamb_update_phase2"]


def nrm2(x) -> np.ndarray:
    """``NDArray.norm()`` on CPU (``mshadow_op::nrm2``, no safe accumulation): the
    scaled sum of squares of the flat array, in order, in ``x``'s dtype::

        ssq, scale = 0, 0
        for a in |x| (nonzero):
            if scale < a: ssq = 1 + ssq * (scale/a) * (scale/a); scale = a
            else:         ssq = ssq + (a/scale) * (a/scale)
        norm = scale * sqrt(ssq)
    """
    x = np.asarray(x).ravel()
    t = x.dtype.type
    ssq, scale, one = t(0), t(0), t(1)
    with np.errstate(all="ignore"):
        for v in x:
            if v != 0:
                a = t(abs(v))
                if scale < a:
                    ssq = t(one + t(t(ssq * t(scale / a)) * t(scale / a)))
                    scale = a
                else:
                    ssq = t(ssq + t(t(a / scale) * t(a / scale)))
        return np.asarray(t(scale * t(np.sqrt(ssq))))


def lamb_update_phase1(weight, grad, mean, var, *, t, wd=0.0, beta1=0.9, beta2=0.999,
                       epsilon=1e-6, rescale_grad=1.0, clip_gradient=None,
                       bias_correction=True, weight32=None):
    """``lamb_update_phase1`` (``LambUpdatePhaseOneKernel``), or with ``weight32``
    ``mp_lamb_update_phase1`` (float32 on the master), what
    ``mx.optimizer.LAMB.update(index, ...)`` runs for one index. Returns ``(g,
    new_mean, new_var)``.

    .. math::
        g &= \\mathrm{clip}(r\\nabla), \\quad
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + ((1-\\beta_2) g) g \\\\
        u &= \\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon} + \\lambda w, \\quad
        \\hat m = m / (1 - \\beta_1^t) \\ (\\text{in double}), \\quad
        \\hat v = v / (1 - \\beta_2^t)

    (``u`` is computed without the correction first and overwritten, as the
    kernel does.) ``beta**t`` is C++ ``std::pow(float, int)``: a double power
    rounded to the dtype.
    """
    weight, grad, dtype, ctype, w, mean, var = _lamb_operands(weight, grad, mean, var,
                                                              weight32)
    p = lambda v: hyperparameter(v, ctype)  # noqa: E731
    one = ctype.type(1)
    b1, b2, eps = p(beta1), p(beta2), p(epsilon)
    with np.errstate(all="ignore"):
        # mshadow's half_t * float is a half_t: under multi_precision the
        # rescaled gradient is rounded to float16 before it is clipped.
        g = (grad.astype(ctype) * p(rescale_grad)).astype(dtype).astype(ctype)
        bound = _kernel_clip(g, clip_gradient, ctype)
        if bound is not None:
            g = _clip(g, bound)
        mean = (b1 * mean + (one - b1) * g).astype(ctype)
        var = (b2 * var + (one - b2) * g * g).astype(ctype)
        decay = (p(wd) * w).astype(ctype)
        if not bias_correction:
            return (mean / (np.sqrt(var) + eps) + decay).astype(ctype), mean, var
        b1_t = ctype.type(np.float64(received_float(beta1)) ** t)
        b2_t = ctype.type(np.float64(received_float(beta2)) ** t)
        mean_hat = (mean.astype(np.float64) / (1.0 - np.float64(b1_t))).astype(ctype)
        var_hat = (var / (one - b2_t)).astype(ctype)
        return (mean_hat / (np.sqrt(var_hat) + eps) + decay).astype(ctype), mean, var


def lamb_update_phase2(weight, g, r1, r2, *, lr, lower_bound=None, upper_bound=None,
                       weight32=None):
    """``lamb_update_phase2`` (``LambUpdatePhaseTwoKernel``), or with ``weight32``
    ``mp_lamb_update_phase2``: ``w - lr' * g`` with ``lr' = lr * r1 / r2`` (``r1``
    clamped to the bounds, each only if truthy; ``lr' = lr`` where ``r1`` or
    ``r2`` is 0). ``r1`` and ``r2`` are :func:`nrm2` of the weight (the master
    under multi_precision) and of ``g``. With ``weight32`` the result is
    ``weight32 - lr' * g`` in float32, rounded to ``weight``'s dtype; MXNet
    writes it to the stored weight only and never updates the master."""
    weight = np.asarray(weight)
    mp = weight32 is not None
    ctype = np.dtype(np.float32) if mp else weight.dtype
    p = lambda v: hyperparameter(v, ctype)  # noqa: E731
    w = np.asarray(weight32 if mp else weight).astype(ctype)
    r1, r2 = ctype.type(r1), ctype.type(r2)
    if lower_bound and lower_bound >= 0:
        r1 = max(r1, p(lower_bound))
    if upper_bound and upper_bound >= 0:
        r1 = min(r1, p(upper_bound))
    lr = p(lr)
    with np.errstate(all="ignore"):
        if not (r1 == 0 or r2 == 0):
            lr = ctype.type(ctype.type(lr * r1) / r2)
        return (w - lr * np.asarray(g).astype(ctype)).astype(ctype).astype(weight.dtype)
