"""NumPy reference of MXNet 1.9.1's RMSProp kernels, evaluated op for op.

``rmsprop_update`` and ``rmspropalex_update`` mirror the C++ kernels
``RMSPropUpdateKernel`` and ``RMSPropAlexUpdateKernel`` (src/operator/optimizer_op-inl.h):
every hyperparameter is first rounded to float32 (MXNet stores operator parameters
as C++ ``float``), then cast to the weight's dtype, and every binary operation is
rounded in that dtype in the kernel's order. On float32 this reproduces MXNet's CPU
results bit for bit (checked against the golden data in ``tests/golden``).

This module is the ground truth of the test suite; it is deliberately slow and
plain. It is not used by the JAX code path.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["rmsprop_update", "rmspropalex_update", "clip_is_on", "hyperparameter"]


def hyperparameter(value: float, dtype) -> np.ndarray:
    """Round a Python hyperparameter as MXNet does: to float32, then to ``dtype``."""
    return np.asarray(np.float32(value)).astype(dtype)[()]


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
