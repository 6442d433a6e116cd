"""``mxopt.rmsprop``: MXNet 1.9.1's ``mxnet.optimizer.RMSProp`` in one call."""
from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mxopt import _engine as E
from mxopt import _kernels as K
from mxopt import _validation as v
from mxopt import lr_scheduler, multipliers, transforms
from mxopt._engine import ScalarOrSchedule
from mxopt._kernels import Scalar
from mxopt._mxnumbers import tuple_float

__all__ = ["rmsprop", "rmsprop_chain", "RMSPropState", "CenteredRMSPropState",
           "adam", "adamax", "nadam", "ftrl", "ftml", "AdamState", "AdamaxState", "NadamState",
           "FtrlState", "FTMLState", "check_python_side_clip", "check_rate_divides"]


class RMSPropState(NamedTuple):
    """State of :func:`rmsprop` with ``centered=False``: MXNet's ``(n,)`` plus the
    number of updates done (drives schedules)."""
    count: jax.Array
    n: optax.Updates


class CenteredRMSPropState(NamedTuple):
    """State of :func:`rmsprop` with ``centered=True``: MXNet's ``(n, g, delta)``
    (``g`` is named ``g_avg`` here) plus the number of updates done."""
    count: jax.Array
    n: optax.Updates
    g_avg: optax.Updates
    delta: optax.Updates


class AdamState(NamedTuple):
    """State of :func:`adam`: MXNet's ``(mean, var)`` plus the number of updates
    done (MXNet's ``num_update``; ``t = count + 1``)."""
    count: jax.Array
    mean: optax.Updates
    var: optax.Updates


class AdamaxState(NamedTuple):
    """State of :func:`adamax`: MXNet's ``(m, u)`` plus the number of updates done."""
    count: jax.Array
    m: optax.Updates
    u: optax.Updates


class NadamState(NamedTuple):
    """State of :func:`nadam`: MXNet's ``(m, v)``, its optimizer-wide
    ``m_schedule`` (one scalar for all leaves) and the number of updates done."""
    count: jax.Array
    m_schedule: jax.Array
    m: optax.Updates
    v: optax.Updates


class FtrlState(NamedTuple):
    """State of :func:`ftrl`: MXNet's ``(z, n)`` plus the number of updates done."""
    count: jax.Array
    z: optax.Updates
    n: optax.Updates


class FTMLState(NamedTuple):
    """State of :func:`ftml`: MXNet's ``(d, v, z)`` plus the number of updates done."""
    count: jax.Array
    d: optax.Updates
    v: optax.Updates
    z: optax.Updates





def check_rate_divides(learning_rate: ScalarOrSchedule, name: str) -> None:
    """Ftrl and FTML divide by the rate: MXNet turns a rate of 0 into NaN weights."""
    v.check_learning_rate(learning_rate)
    if not callable(learning_rate) and v.static_value(learning_rate) == 0.0:
        raise ValueError(f"learning_rate must be > 0 for {name}: its kernel divides by the "
                         f"rate, and MXNet turns a rate of 0 into NaN weights. Freeze "
                         f"parameters with optax.masked or optax.set_to_zero instead")


def _check_betas(**betas: Scalar) -> None:
    for name, value in betas.items():
        v.check_scalar(name, value, low=0.0, high=1.0, high_open=True)


# What the Optimizer-base keywords mean, documented once for every alias.
_BASE_ARGS_DOC = """wd: weight decay, >= 0 (see the formula for where it enters).
      rescale_grad: gradient scale, > 0 (e.g. ``1 / batch_size``).
      clip_gradient: None, 0 or a bound > 0 (see the formula for what 0 means).
      lr_mult: per-parameter learning-rate multipliers (:mod:`mxopt.multipliers`):
        a leaf's rate is ``learning_rate * lr_mult``.
      wd_mult: per-parameter weight-decay multipliers: a leaf's decay is
        ``wd * wd_mult`` (e.g. :func:`mxopt.multipliers.mxnet_module_wd_mult`
        for MXNet's ``param_idx2name`` rule).
      begin_num_update: the update count to start from, as MXNet's (an update
        count ``t`` includes it: a resumed run starts at ``begin_num_update + 1``).
      multi_precision: keep float32 master copies of float16/bfloat16 params
        and run the optimizer on them (:func:`mxopt.master_weights`).
      skip_nonfinite: skip (and count) steps whose gradients are not all
        finite, leaving params and state untouched (see :func:`rmsprop`)."""


_WRAPPED_DOC = """(inside ``optax.ApplyIfFiniteState`` with ``skip_nonfinite`` and
      :class:`mxopt.MasterWeightsState` with ``multi_precision``); each leaf
      is one expression in MXNet's order."""


def _documented(fn):
    # The Optimizer-base arguments are documented once, here, for every alias.
    fn.__doc__ = fn.__doc__.replace("{base_args}", _BASE_ARGS_DOC).replace(
        "{wrapped}", _WRAPPED_DOC)
    return fn


@_documented
def adam(learning_rate: ScalarOrSchedule = 0.001, beta1: Scalar = 0.9, beta2: Scalar = 0.999,
         epsilon: Scalar = 1e-8, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
         clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
         wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
         multi_precision: bool = False,
         skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's Adam (``mx.optimizer.Adam``, kernel ``adam_update``).

    With ``t`` the update count (``begin_num_update`` included)::

        lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)   # MXNet's Python side, float64
        g = clip(rescale_grad * grad + wd * w, clip_gradient)   # L2 decay BEFORE clipping
        mean = beta1 * mean + (1 - beta1) * g
        var = beta2 * var + (1 - beta2) * g * g
        w = w - lr_t * mean / (sqrt(var) + epsilon)          # epsilon not bias-corrected

    Unlike ``optax.adam``/``optax.adamw``: the decay is L2 (added to the
    gradient, so it goes through the moments), the bias correction is folded
    into the rate, and epsilon is outside the root and uncorrected.
    ``clip_gradient`` 0 or None is off (a kernel optimizer). Outside
    ``jax.jit`` the folded rate is MXNet's float64 host value, parsed as
    MXNet's kernel parses it: bit for bit. Under ``jax.jit`` the count is
    traced and the fold runs on device (float64 with ``jax_enable_x64``,
    else float32), then rounds correctly to float32 where MXNet's parser
    sometimes lands an ulp away: within an ulp of the rate.

    Args:
      learning_rate: float >= 0, JAX scalar, optax schedule or
        :mod:`mxopt.lr_scheduler` scheduler (as in :func:`rmsprop`).
      beta1, beta2: decay of the moments, in [0, 1).
      epsilon: added to ``sqrt(var)``, >= 0.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is :class:`AdamState`
      {wrapped}

    Example:
      >>> import jax.numpy as jnp, optax, mxopt
      >>> params = {"fc_weight": jnp.ones(3, jnp.float32)}
      >>> tx = mxopt.adam(0.01, wd=1e-4)
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"fc_weight": jnp.full(3, 0.5, jnp.float32)}, state, params)
      >>> [round(float(x), 4) for x in optax.apply_updates(params, updates)["fc_weight"]]
      [0.99, 0.99, 0.99]
    """
    v.check_learning_rate(learning_rate)
    _check_betas(beta1=beta1, beta2=beta2)
    v.check_scalar("epsilon", epsilon, low=0.0)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)
    opt = E.Optimizer(
        who="mxopt.adam", kernel=K.adam_update, state_cls=AdamState, fold=K.adam_fold,
        hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient, beta1=beta1,
                   beta2=beta2, epsilon=epsilon))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


def check_python_side_clip(clip_gradient: Optional[Scalar], name: str) -> None:
    """Adamax's ``clip_gradient=0``: MXNet's Python side clips every gradient to
    0, so ``u`` stays 0 and every weight becomes ``0 / 0 = NaN``."""
    if clip_gradient is not None and v.static_value(clip_gradient) == 0.0:
        raise ValueError(f"clip_gradient=0 makes every {name} weight NaN in MXNet (its Python "
                         f"side clips every gradient to 0, so u stays 0 and m / u = 0 / 0): "
                         f"pass None to switch clipping off, or a bound > 0")


@_documented
def adamax(learning_rate: ScalarOrSchedule = 0.002, beta1: Scalar = 0.9,
           beta2: Scalar = 0.999, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
           clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
           wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
           multi_precision: bool = False,
           skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's Adamax (``mx.optimizer.Adamax``, NDArray operators in Python).

    With ``t`` the update count (``begin_num_update`` included)::

        lr_t = lr / (1 - beta1**t)                          # Python float64
        g = clip(grad * rescale_grad + wd * w, -clip_gradient, clip_gradient)
        m = beta1 * m + (1 - beta1) * g
        u = maximum(beta2 * u, |g|)
        w = w - lr_t * m / u

    As in MXNet, ``m / u`` is ``0 / 0 = NaN`` wherever ``u`` is still 0 (an
    element whose gradient has been exactly 0 from the first step on): that
    is Adamax's formula, reproduced (``skip_nonfinite`` does not catch it; it
    checks the gradients). ``clip_gradient=0`` would clip every gradient to 0
    here (MXNet's Python side tests ``is not None``) and make every weight NaN,
    so it is refused. The scalars are NDArray operands (parsed as C++ doubles,
    then cast). Outside ``jax.jit`` the folded rate is MXNet's float64 value;
    under it, computed on device (float64 with x64, else float32).

    Args:
      learning_rate: float >= 0, JAX scalar, optax schedule or
        :mod:`mxopt.lr_scheduler` scheduler.
      beta1: decay of ``m``, in [0, 1).
      beta2: decay of the infinity norm ``u``, in [0, 1).
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is :class:`AdamaxState`
      {wrapped}

    Example:
      >>> import jax.numpy as jnp, optax, mxopt
      >>> params = {"fc_weight": jnp.ones(3, jnp.float32)}
      >>> tx = mxopt.adamax(0.02)
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"fc_weight": jnp.full(3, 0.5, jnp.float32)}, state, params)
      >>> [round(float(x), 4) for x in optax.apply_updates(params, updates)["fc_weight"]]
      [0.98, 0.98, 0.98]
    """
    v.check_learning_rate(learning_rate)
    _check_betas(beta1=beta1, beta2=beta2)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)
    check_python_side_clip(clip_gradient, "Adamax")
    opt = E.Optimizer(
        who="mxopt.adamax", kernel=K.adamax_update, state_cls=AdamaxState, fold=K.adamax_fold,
        hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient, beta1=beta1,
                   beta2=beta2))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


@_documented
def nadam(learning_rate: ScalarOrSchedule = 0.001, beta1: Scalar = 0.9, beta2: Scalar = 0.999,
          epsilon: Scalar = 1e-8, schedule_decay: Scalar = 0.004, *, wd: Scalar = 0.0,
          rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
          lr_mult: multipliers.MultiplierSpec = None, wd_mult: multipliers.MultiplierSpec = None,
          begin_num_update: int = 0, multi_precision: bool = False,
          skip_nonfinite: bool = False,
          per_step_schedule: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's Nadam (``mx.optimizer.Nadam``, NDArray operators in Python).

    With ``t`` the update count (``begin_num_update`` included)::

        mu_t   = beta1 * (1 - 0.5 * 0.96**(t * schedule_decay))        # Python float64
        mu_t1  = beta1 * (1 - 0.5 * 0.96**((t + 1) * schedule_decay))
        m_schedule = m_schedule * mu_t           # ONE scalar, advanced per leaf (below)
        g = clip(grad * rescale_grad + wd * w, -clip_gradient, clip_gradient)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_bar = (1 - mu_t) * g / (1 - m_schedule) + mu_t1 * m / (1 - m_schedule * mu_t1)
        w = w - lr * m_bar / (sqrt(v / (1 - beta2**t)) + epsilon)

    MXNet's quirk, reproduced: ``m_schedule`` is one scalar on the optimizer
    (``state.m_schedule`` here), multiplied on every update call of every
    parameter, so with P parameters it advances P times per step and the k-th
    parameter in call order sees an extra ``mu_t**k``. Leaves are visited in
    the params' flatten order (sorted keys for dicts): a Gluon Trainer's
    order when the leaves are named as MXNet's parameters (it numbers them by
    sorted name). ``per_step_schedule=True`` gives the textbook schedule
    instead. ``clip_gradient=0`` clips every gradient (decay included)
    to 0, so the weights stop changing (MXNet's Python side tests ``is not
    None``); None is off. The scalars are NDArray operands (C++
    doubles, then cast); outside ``jax.jit`` they are MXNet's float64 host
    values, under it computed on device (float64 with x64, else float32, as is
    ``state.m_schedule``).

    Args:
      learning_rate: float >= 0, JAX scalar, optax schedule or
        :mod:`mxopt.lr_scheduler` scheduler.
      beta1, beta2: decay of the moments, in [0, 1).
      epsilon: added to the root, >= 0.
      schedule_decay: decay of the momentum schedule, >= 0.
      per_step_schedule: False (default) reproduces MXNet's shared schedule.
        True is the textbook Nadam (Dozat 2016): ``m_schedule`` advances once
        per step, every leaf seeing ``mu_1 * ... * mu_t`` (the product over
        this run's updates, from ``begin_num_update + 1``); not MXNet's result.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is :class:`NadamState`
      {wrapped}

    Example:
      >>> import jax, jax.numpy as jnp, optax, mxopt
      >>> params = {"fc_bias": jnp.zeros(2, jnp.float32), "fc_weight": jnp.ones(2, jnp.float32)}
      >>> tx = mxopt.nadam(0.01)
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = tx.update(grads, state, params)
      >>> [round(float(x), 4) for x in optax.apply_updates(params, updates)["fc_weight"]]
      [0.9926, 0.9926]
    """
    v.check_learning_rate(learning_rate)
    _check_betas(beta1=beta1, beta2=beta2)
    v.check_scalar("epsilon", epsilon, low=0.0)
    v.check_scalar("schedule_decay", schedule_decay, low=0.0)
    v.check_bool("per_step_schedule", per_step_schedule)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)
    opt = E.Optimizer(
        who="mxopt.nadam", kernel=K.nadam_update, state_cls=NadamState,
        carry=E.Carry("m_schedule", 1.0, K.nadam_advance, per_leaf=not per_step_schedule),
        hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient, beta1=beta1,
                   beta2=beta2, epsilon=epsilon, schedule_decay=schedule_decay))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


@_documented
def ftrl(learning_rate: ScalarOrSchedule = 0.1, lamda1: Scalar = 0.01, beta: Scalar = 1.0, *,
         wd: Scalar = 0.0, rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
         lr_mult: multipliers.MultiplierSpec = None, wd_mult: multipliers.MultiplierSpec = None,
         begin_num_update: int = 0, multi_precision: bool = False,
         skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's Ftrl (``mx.optimizer.Ftrl``, kernel ``ftrl_update``)::

        g = clip(rescale_grad * grad, clip_gradient)         # no decay in the gradient
        z = z + g - (sqrt(n + g * g) - sqrt(n)) * w / lr
        n = n + g * g
        w = (sign(z) * lamda1 - z) / ((beta + sqrt(n)) / lr + wd) * (|z| > lamda1)

    ``wd`` appears only in the denominator; the old weight enters only
    through ``z``, so the first step replaces the weight. The update is
    ``w_new - w`` (exact when the two are within a factor 2; otherwise within
    half an ulp of the larger). ``clip_gradient`` 0 or None is off. MXNet's
    state is float32 only: float16/bfloat16 params need ``multi_precision``
    (``init`` says so). A learning rate of 0 (NaN weights in MXNet) is
    refused; a schedule or ``lr_mult`` that reaches 0 gives NaN, as in MXNet.

    Args:
      learning_rate: float > 0, JAX scalar, optax schedule or
        :mod:`mxopt.lr_scheduler` scheduler (MXNet's signature has it second:
        ``Ftrl(lamda1, learning_rate, beta)``).
      lamda1: L1 strength, >= 0.
      beta: added to ``sqrt(n)`` in the denominator, >= 0.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is :class:`FtrlState`
      {wrapped}

    Example:
      >>> import jax.numpy as jnp, optax, mxopt
      >>> params = {"fc_weight": jnp.ones(3, jnp.float32)}
      >>> tx = mxopt.ftrl(0.1)
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"fc_weight": jnp.full(3, 0.5, jnp.float32)}, state, params)
      >>> [round(float(x), 4) for x in optax.apply_updates(params, updates)["fc_weight"]]
      [0.2993, 0.2993, 0.2993]
    """
    check_rate_divides(learning_rate, "Ftrl")
    v.check_scalar("lamda1", lamda1, low=0.0)
    v.check_scalar("beta", beta, low=0.0)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)
    opt = E.Optimizer(
        who="mxopt.ftrl", kernel=K.ftrl_update, state_cls=FtrlState, low_precision_state=False,
        hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient, lamda1=lamda1,
                   beta=beta))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


@_documented
def ftml(learning_rate: ScalarOrSchedule = 0.01, beta1: Scalar = 0.6, beta2: Scalar = 0.999,
         epsilon: Scalar = 1e-8, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
         clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
         wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
         multi_precision: bool = False,
         skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's FTML (``mx.optimizer.FTML``, kernel ``ftml_update``).

    With ``t`` the update count (``begin_num_update`` included)::

        g = clip(rescale_grad * grad + wd * w, clip_gradient)   # decay BEFORE clipping
        v = beta2 * v + (1 - beta2) * g * g
        d_t = (1 - beta1**t) / lr * (sqrt(v / (1 - beta2**t)) + epsilon)
        z = beta1 * z + (1 - beta1) * g - (d_t - beta1 * d) * w
        d = d_t
        w = -z / d_t

    The powers are C's float32 ``powf`` in MXNet: outside ``jax.jit`` they are
    (libm's), under it a float64 power rounded to float32 (float32 without
    x64), which can differ in the last bit. The weight is rebuilt from ``z``,
    so the update is ``w_new - w`` (exact when the two are within a factor 2;
    otherwise within half an ulp of the larger). ``clip_gradient`` 0 or None
    is off. A learning rate of 0 (NaN in MXNet) is refused.

    Args:
      learning_rate: float > 0, JAX scalar, optax schedule or
        :mod:`mxopt.lr_scheduler` scheduler (MXNet's default rate, 0.01; its
        signature has no ``learning_rate`` of its own).
      beta1, beta2: decay rates, in [0, 1).
      epsilon: added to the root, >= 0 (a C++ double in MXNet).
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is :class:`FTMLState`
      {wrapped}

    Example:
      >>> import jax.numpy as jnp, optax, mxopt
      >>> params = {"fc_weight": jnp.ones(3, jnp.float32)}
      >>> tx = mxopt.ftml(0.05)
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"fc_weight": jnp.full(3, 0.5, jnp.float32)}, state, params)
      >>> [round(float(x), 4) for x in optax.apply_updates(params, updates)["fc_weight"]]
      [0.95, 0.95, 0.95]
    """
    check_rate_divides(learning_rate, "FTML")
    _check_betas(beta1=beta1, beta2=beta2)
    v.check_scalar("epsilon", epsilon, low=0.0)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)
    opt = E.Optimizer(
        who="mxopt.ftml", kernel=K.ftml_update, state_cls=FTMLState, fold=K.ftml_fold,
        hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient, beta1=beta1,
                   beta2=beta2, epsilon=epsilon))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


def rmsprop(learning_rate: ScalarOrSchedule = 0.001, gamma1: Scalar = 0.9,
            gamma2: Scalar = 0.9, epsilon: Scalar = 1e-8, centered: bool = False,
            clip_weights: Optional[Scalar] = None, *, wd: Scalar = 0.0,
            rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
            lr_mult: multipliers.MultiplierSpec = None,
            wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
            multi_precision: bool = False,
            skip_nonfinite: bool = False) -> optax.GradientTransformation:
    """MXNet 1.9.1's RMSProp as an Optax gradient transformation.

    With :math:`\\nabla` the incoming gradient and :math:`w` the weight, each step
    computes, in the weight's dtype and MXNet's order::

        g = clip(rescale_grad * grad + wd * w, clip_gradient)   # decay BEFORE clipping
        centered=False (Tieleman & Hinton 2012):
            n = (1 - gamma1) * g * g + gamma1 * n
            w = w - lr * g / sqrt(n + epsilon)                    # epsilon INSIDE the root
        centered=True (Graves 2013, eq. 38-45):
            n     = (1 - gamma1) * g * g + gamma1 * n
            g_avg = (1 - gamma1) * g + gamma1 * g_avg
            delta = gamma2 * delta - lr * g / sqrt(n - g_avg**2 + epsilon)  # lr INSIDE
            w = w + delta
        w = clip(w, clip_weights)

    ``clip_gradient`` and ``clip_weights`` act only when truthy (None and 0 switch
    them off). It differs from ``optax.rmsprop`` (whose centered variant has no
    momentum buffer unless ``momentum=`` is given, and which has no weight decay,
    gradient or weight clipping, nor MXNet's float32 rounding of hyperparameters)
    and from ``torch.optim.RMSprop`` (epsilon outside the root).

    Use it the optax way::

        tx = mxopt.rmsprop(0.01, centered=True, wd=1e-4, clip_gradient=1.0)
        state = tx.init(params)
        updates, state = tx.update(grads, state, params)   # params are required
        params = optax.apply_updates(params, updates)

    On XLA:CPU the result is MXNet's bit for bit, with or without ``jax.jit``,
    except where ``clip_weights`` clips (within an ulp there; see README,
    "Numerics").

    Args:
      learning_rate: float >= 0, JAX scalar, an optax schedule (called with the
        number of updates done so far, ``schedule(count)``), or an
        :mod:`mxopt.lr_scheduler` scheduler (MXNet's rule: the k-th update uses
        ``scheduler(begin_num_update + k)``, k = 1, 2, ...).
      gamma1: decay of the running mean(s), in [0, 1).
      gamma2: momentum factor of the centered variant, in [0, 1).
      epsilon: added under the square root, >= 0.
      centered: False for Tieleman & Hinton, True for Graves.
      clip_weights: None, 0 or a bound > 0 for the weights after the step.
      wd: L2 weight decay, >= 0, added to the gradient before clipping.
      rescale_grad: gradient scale, > 0 (e.g. ``1 / batch_size``).
      clip_gradient: None, 0 or a bound > 0 for the decayed, rescaled gradient.
      lr_mult: per-parameter learning-rate multipliers (see
        :mod:`mxopt.multipliers`): a leaf's rate is ``learning_rate * lr_mult``.
      wd_mult: per-parameter weight-decay multipliers: a leaf's decay is
        ``wd * wd_mult`` (e.g. :func:`mxopt.multipliers.mxnet_module_wd_mult`).
      begin_num_update: the update count to start from, as MXNet's; the state's
        ``count`` is MXNet's ``num_update``.
      multi_precision: keep float32 master copies of float16/bfloat16 params
        and run the optimizer on them (:func:`mxopt.master_weights`).
      skip_nonfinite: by default a NaN or infinite gradient propagates into the
        weights and state, as in MXNet. True skips any step whose gradients
        are not all finite, leaving params and optimizer state untouched, and
        counts the skipped steps. The state is ``optax.apply_if_finite``'s
        (``total_notfinite`` counts them; inside
        ``MasterWeightsState.inner_state`` with ``multi_precision``) and so are
        the results, but the choice is made element by element rather than
        with ``lax.cond``, so under ``jax.jit`` it adds no parameter-sized
        temporary and the donated buffers are still updated in place. The
        check sums ``g - g`` (one more read of the gradients); a caller that
        has checked them already (dynamic loss scaling does) can pass the
        scalar bool as ``tx.update(grads, state, params, grads_finite=flag)``.

    Integer and bool leaves pass through untouched and get no state; complex
    leaves are refused with a ``TypeError`` naming the leaf. Updates have the
    gradients' dtype, except that with ``multi_precision`` those of
    float16/bfloat16 leaves are float32 (exact landing on the masters), so
    ``optax.apply_if_finite`` cannot wrap it: use ``skip_nonfinite``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (extra ``update`` keywords
      other than ``grads_finite`` are ignored, so it sits in ``optax.chain``
      with transformations that take some) whose state is :class:`RMSPropState`
      or :class:`CenteredRMSPropState` (inside ``optax.ApplyIfFiniteState`` with
      ``skip_nonfinite``, and :class:`mxopt.MasterWeightsState` with
      ``multi_precision``). It evaluates each leaf in one expression in
      the kernel's order; :func:`rmsprop_chain` builds the same optimizer from
      the composable pieces in :mod:`mxopt.transforms`.
    """
    v.check_learning_rate(learning_rate)
    v.check_bool("centered", centered)
    v.check_scalar("gamma1", gamma1, low=0.0, high=1.0, high_open=True)
    v.check_scalar("gamma2", gamma2, low=0.0, high=1.0, high_open=True)
    v.check_scalar("epsilon", epsilon, low=0.0)
    v.check_scalar("clip_weights", clip_weights, low=0.0, allow_none=True)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)
    opt = E.Optimizer(
        who=f"mxopt.rmsprop(centered={centered})",
        kernel=K.rmspropalex_update if centered else K.rmsprop_update,
        state_cls=CenteredRMSPropState if centered else RMSPropState,
        hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient, gamma1=gamma1,
                   gamma2=gamma2, epsilon=epsilon))
    return E.fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult, wd_mult=wd_mult,
                   begin_num_update=begin_num_update, clip_weights=clip_weights,
                   multi_precision=multi_precision, skip_nonfinite=skip_nonfinite)


def rmsprop_chain(learning_rate: ScalarOrSchedule = 0.001, gamma1: Scalar = 0.9,
                  gamma2: Scalar = 0.9, epsilon: Scalar = 1e-8, centered: bool = False,
                  clip_weights: Optional[Scalar] = None, *, wd: Scalar = 0.0,
                  rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
                  lr_mult: multipliers.MultiplierSpec = None,
                  wd_mult: multipliers.MultiplierSpec = None,
                  begin_num_update: int = 0, multi_precision: bool = False,
                  skip_nonfinite: bool = False) -> optax.GradientTransformation:
    """:func:`rmsprop` built as an ``optax.chain`` of :mod:`mxopt.transforms`.

    Same arguments and the same mathematics as :func:`rmsprop`, as separate pieces
    to rearrange or extend, and the same inputs accepted and refused (its first
    link is the engine's check). It agrees with :func:`rmsprop` to rounding: the
    centered chain computes ``lr * (g / root)`` where MXNet's kernel (and
    :func:`rmsprop`) computes ``(lr * g) / root``, and each piece is its own pass
    over memory. ``skip_nonfinite`` wraps the chain in an elementwise skip with
    ``optax.apply_if_finite``'s state (never giving up, as :func:`rmsprop` does),
    ``multi_precision`` in :func:`mxopt.master_weights`, in that order.
    """
    v.check_bool("centered", centered)
    v.check_scalar("gamma2", gamma2, low=0.0, high=1.0, high_open=True)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)
    parts = [
        transforms.rescale_gradient(rescale_grad),
        transforms.add_weight_decay(wd, wd_mult),
        transforms.clip_gradient(clip_gradient),
    ]
    if centered:
        parts += [transforms.scale_by_centered_rms(gamma1, epsilon),
                  transforms.graves_momentum(learning_rate, gamma2, lr_mult,
                                             begin_num_update)]
    else:
        parts += [transforms.scale_by_rms(gamma1, epsilon),
                  transforms.scale_by_learning_rate(learning_rate, lr_mult,
                                                    begin_num_update)]
    parts.append(transforms.clip_weights(clip_weights))
    tx = optax.chain(*parts)
    if skip_nonfinite:
        tx = E.skip_nonfinite(tx)
    # The checks come first, so the skip sees integer leaves' zero updates.
    tx = E.checked_chain(f"mxopt.rmsprop_chain(centered={centered})", tx)
    return E.master_weights(tx) if multi_precision else tx


# ----------------------------------------------------------------------------------
# SGD, NAG, Signum, AdaGrad, AdaDelta
# ----------------------------------------------------------------------------------

__all__ += ["sgd", "nag", "signum", "adagrad", "adadelta", "SGDState", "SGDNoMomentumState",
            "NAGState", "NAGNoMomentumState", "SignumState", "SignSGDState", "AdaGradState",
            "AdaDeltaState"]


class SGDState(NamedTuple):
    """State of :func:`sgd` with momentum: MXNet's ``mom`` plus the number of
    updates done (``num_update``)."""
    count: jax.Array
    mom: optax.Updates


class SGDNoMomentumState(NamedTuple):
    """State of :func:`sgd` with ``momentum=0``: MXNet keeps no state (None);
    only the number of updates done."""
    count: jax.Array


class NAGState(NamedTuple):
    """State of :func:`nag` with momentum: MXNet's ``mom`` plus the count."""
    count: jax.Array
    mom: optax.Updates


class NAGNoMomentumState(NamedTuple):
    """State of :func:`nag` with ``momentum=0`` (MXNet: None): the count only."""
    count: jax.Array


class SignumState(NamedTuple):
    """State of :func:`signum` with momentum: MXNet's ``mom`` (the *negated*
    moving average of the gradient) plus the count."""
    count: jax.Array
    mom: optax.Updates


class SignSGDState(NamedTuple):
    """State of :func:`signum` with ``momentum=0`` (MXNet runs ``signsgd_update``
    and keeps None): the count only."""
    count: jax.Array


class AdaGradState(NamedTuple):
    """State of :func:`adagrad`: MXNet's ``history`` plus the count."""
    count: jax.Array
    history: optax.Updates


class AdaDeltaState(NamedTuple):
    """State of :func:`adadelta`: MXNet's ``(acc_g, acc_delta)`` plus the count."""
    count: jax.Array
    acc_g: optax.Updates
    acc_delta: optax.Updates


def _momentum_path(momentum, with_momentum, without_momentum, state, no_momentum_state):
    """The kernel and state for ``momentum``. A Python number picks one path,
    as MXNet's ``if momentum > 0`` does: 0 runs MXNet's momentum-free kernel and
    keeps no buffer. A JAX scalar (e.g. under ``optax.inject_hyperparams``) is
    unknown at trace time: the buffer is kept, and the kernel picks MXNet's
    path elementwise from the value (:func:`mxopt._kernels.momentum_choice`)."""
    if isinstance(momentum, (jax.Array, np.ndarray)):
        return K.momentum_choice(with_momentum, without_momentum), state
    if momentum > 0:
        return with_momentum, state
    return without_momentum, no_momentum_state


def _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite):
    v.check_learning_rate(learning_rate)
    v.check_base_options(wd=wd, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                         begin_num_update=begin_num_update, multi_precision=multi_precision,
                         skip_nonfinite=skip_nonfinite)


def _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
           skip_nonfinite):
    return E.fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult, wd_mult=wd_mult,
                   begin_num_update=begin_num_update, multi_precision=multi_precision,
                   skip_nonfinite=skip_nonfinite)




@_documented
def sgd(learning_rate: ScalarOrSchedule = 0.01, momentum: Scalar = 0.0,
        lazy_update: bool = True, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
        clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
        wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
        multi_precision: bool = False,
        skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's SGD (``multi_sgd_mom_update`` / ``multi_sgd_update``).

    Each step, in the weight's dtype and MXNet's grouping::

        mom = momentum * mom - (lr * wd) * w - lr * clip(rescale_grad * grad, clip_gradient)
        w = w + mom

    With ``momentum=0`` there is no buffer and ``mom`` is 0 on the right. The
    learning rate is inside the buffer, so a schedule that lowers it does not
    rescale the stored momentum (unlike ``optax.sgd``'s ``lr * trace``).
    ``clip_gradient`` None or 0 is off (MXNet passes it only when truthy).
    ``lr`` and ``wd`` reach MXNet's kernel as correctly rounded float32
    (``Tuple<float>``), the other fields through dmlc's parser.

    Under ``jax.jit`` an :mod:`mxopt.lr_scheduler` scheduler's float32 table is
    rounded as ``Tuple<float>`` reads a rate, too. The result is MXNet's bit for
    bit on the golden runs (XLA:CPU, with and without ``jax.jit``),
    ``multi_precision`` included.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"fc_weight": jnp.array([1.0, -2.0])}
    >>> tx = mxopt.sgd(0.1, momentum=0.9, wd=0.01)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"fc_weight": jnp.array([0.5, 0.5])}, state, params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["fc_weight"].tolist()]
    [0.949, -2.048]

    Args:
      learning_rate: float >= 0, JAX scalar, optax schedule (``schedule(count)``)
        or :mod:`mxopt.lr_scheduler` scheduler (MXNet's rule).
      momentum: in [0, 1). A JAX scalar keeps the buffer and follows MXNet's
        ``momentum > 0`` test elementwise.
      lazy_update: accepted for MXNet's signature; it matters only for MXNet's
        row_sparse gradients, which JAX does not have.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SGDState`
      (:class:`SGDNoMomentumState` for a Python ``momentum=0``), wrapped as in
      :func:`rmsprop` by ``skip_nonfinite`` and ``multi_precision`` (whose float32
      master and buffer match MXNet's fused ``multi_mp_sgd_*`` kernels).
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True)
    v.check_bool("lazy_update", lazy_update)
    kernel, state_cls = _momentum_path(momentum, K.sgd_mom_update, K.multi_sgd_update,
                                       SGDState, SGDNoMomentumState)
    opt = E.Optimizer(who="mxopt.sgd", rate_parse=tuple_float, kernel=kernel, state_cls=state_cls,
                      hyper=dict(momentum=momentum, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


@_documented
def nag(learning_rate: ScalarOrSchedule = 0.01, momentum: Scalar = 0.0, *, wd: Scalar = 0.0,
        rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
        lr_mult: multipliers.MultiplierSpec = None, wd_mult: multipliers.MultiplierSpec = None,
        begin_num_update: int = 0, multi_precision: bool = False,
        skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's NAG (``nag_mom_update``; ``sgd_update`` with ``momentum=0``).

    Each step, with ``g = clip(rescale_grad * grad, clip_gradient)``::

        momentum > 0:
            m0 = momentum * mom
            w_new = (w - m0) + (momentum + 1) * (m0 - lr * (g + wd * w))
            mom = m0 - lr * (g + wd * w_new)     # MXNet's quirk: the NEW weight
        momentum = 0:
            w_new = (1 - lr * wd) * w - lr * g

    MXNet's kernel writes the weight before it updates the buffer, so the
    buffer's decay term reads the updated weight; mxopt reproduces it. As lr sits
    inside the buffer, this is not the docstring's ``w -= lr * (g + momentum *
    mom)`` once lr changes. ``clip_gradient`` None or 0 is off.

    MXNet writes ``w_new``; an optax update is added, ``w + (w_new - w)``, in
    the weight's dtype. That is ``w_new`` bit for bit while ``w_new`` is within
    a factor 2 of ``w``; where a weight more than doubles or shrinks by more
    than half in one step, it rounds on the grid of the larger of the two and
    can miss ``w_new`` by an ulp of it, and later steps carry the offset on. The
    offset is absolute: a weight that grew to ~15 and then crosses zero can be
    an ulp or two of 15 from MXNet's (about 2e-6), far more than 1e-5 of its
    own size. This is inherent to the functional form; the class form
    (:class:`mxopt.NAG`) writes ``w_new`` itself and is MXNet's bit for bit.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = mxopt.nag(0.1, momentum=0.9)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.5, 0.5])}, state, params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]
    [0.905, -2.095]

    Args:
      learning_rate: as in :func:`sgd`.
      momentum: in [0, 1); as in :func:`sgd`.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`NAGState`
      (:class:`NAGNoMomentumState` for a Python ``momentum=0``); ``multi_precision``
      matches MXNet's ``mp_nag_mom_update`` / ``mp_sgd_update``.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True)
    kernel, state_cls = _momentum_path(momentum, K.nag_mom_update, K.sgd_update, NAGState,
                                       NAGNoMomentumState)
    opt = E.Optimizer(who="mxopt.nag", kernel=kernel, state_cls=state_cls,
                      hyper=dict(momentum=momentum, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


@_documented
def signum(learning_rate: ScalarOrSchedule = 0.01, momentum: Scalar = 0.9,
           wd_lh: Scalar = 0.0, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
           clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
           wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
           multi_precision: bool = False,
           skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's Signum (``signum_update``; ``signsgd_update`` with ``momentum=0``).

    Each step::

        momentum > 0:
            mom = momentum * mom - (1 - momentum) * wd * w
                  - (1 - momentum) * clip(rescale_grad * grad, clip_gradient)
            w = (1 - lr * wd_lh) * w + lr * sign(mom)     # mom: the NEGATED average
        momentum = 0 (signSGD):
            w = (1 - lr * wd) * w - lr * sign(grad)

    MXNet's quirks, reproduced: the momentum-0 kernel ignores ``rescale_grad``
    and ``clip_gradient`` and makes ``wd`` a decoupled decay; ``sign(0) = 0``;
    ``clip_gradient`` None or 0 is off. MXNet raises on ``wd_lh != 0`` with
    ``momentum=0`` (``signsgd_update`` has no ``wd_lh``), and so does mxopt,
    with a ValueError. The class form (:class:`mxopt.Signum`) also reproduces
    MXNet overwriting a scheduler's ``base_lr`` with the default 0.01. Where
    ``lr * wd_lh`` (momentum) or ``lr * wd`` (signSGD) is 0 the result is
    MXNet's bit for bit; otherwise the decayed weight ``(1 - lr*wd) * w`` is
    not of the form ``w + update`` and lands within an ulp or so.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0, 3.0])}
    >>> tx = mxopt.signum(0.01)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5, 0.0])}, state, params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]
    [0.99, -1.99, 3.0]

    Args:
      learning_rate: as in :func:`sgd`.
      momentum: in [0, 1); a JAX scalar keeps the buffer and runs signSGD
        elementwise where it is 0.
      wd_lh: decoupled weight decay of the momentum kernel, >= 0.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SignumState`
      (:class:`SignSGDState` for a Python ``momentum=0``).
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True)
    v.check_scalar("wd_lh", wd_lh, low=0.0)
    if K.is_static(momentum, 0.0) and not K.is_static(wd_lh, 0.0) and not isinstance(
            momentum, (jax.Array, np.ndarray)):
        raise ValueError(f"wd_lh={wd_lh!r} needs momentum > 0: with momentum=0 Signum runs "
                         f"MXNet's signsgd_update, which has no wd_lh (MXNet raises "
                         f"'Cannot find argument wd_lh'); use wd for decoupled decay there, "
                         f"or pass momentum > 0")
    kernel, state_cls = _momentum_path(momentum, K.signum_update, K.signsgd_update,
                                       SignumState, SignSGDState)
    opt = E.Optimizer(who="mxopt.signum", kernel=kernel, state_cls=state_cls,
                      hyper=dict(momentum=momentum, wd_lh=wd_lh, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


@_documented
def adagrad(learning_rate: ScalarOrSchedule = 0.01, eps: Scalar = 1e-7, *, wd: Scalar = 0.0,
            rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
            lr_mult: multipliers.MultiplierSpec = None,
            wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
            multi_precision: bool = False,
            skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's AdaGrad (Python NDArray operators on dense arrays).

    Each step::

        g = clip(rescale_grad * grad, clip_gradient)
        history = history + g * g
        w = w + (g / sqrt(history + eps) + w * wd) * (-lr)

    MXNet's quirks, reproduced: the decay is decoupled (outside the history and
    the root) yet scaled by ``lr``; ``eps`` is inside the root; clipping applies
    whenever ``clip_gradient`` is not None, so ``clip_gradient=0`` clips every
    gradient to 0 (the Python-side rule, unlike the kernel optimizers). MXNet
    keeps the history in float32 only and refuses float16 weights without
    ``multi_precision``; so does mxopt (``init`` raises, naming the leaf). The
    result is MXNet's bit for bit on the golden runs.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = mxopt.adagrad(0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.5, -4.0])}, state, params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]
    [0.9, -1.9]

    Args:
      learning_rate: as in :func:`sgd`.
      eps: added inside the square root, >= 0 (MXNet's ``float_stable_eps``).
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`AdaGradState`.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("eps", eps, low=0.0)
    opt = E.Optimizer(who="mxopt.adagrad", kernel=K.adagrad_update, state_cls=AdaGradState,
                      hyper=dict(eps=eps, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient),
                      low_precision_state=False)
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


@_documented
def adadelta(learning_rate: ScalarOrSchedule = 0.01, rho: Scalar = 0.90,
             epsilon: Scalar = 1e-5, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
             clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
             wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
             multi_precision: bool = False,
             skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's AdaDelta (Python NDArray operators).

    Each step::

        g = clip(rescale_grad * grad, clip_gradient)
        acc_g = rho * acc_g + (1 - rho) * g * g
        delta = sqrt(acc_delta + epsilon) / sqrt(acc_g + epsilon) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        w = w - (delta + wd * w)

    MXNet's quirks, reproduced: the learning rate is **never used**
    (``learning_rate``, schedules and ``lr_mult`` are accepted and have no
    effect), nor is the decay scaled by any rate; ``clip_gradient=0`` clips
    every gradient to 0 (the Python-side rule); float16 weights need
    ``multi_precision`` (``init`` raises otherwise, naming the leaf). One MXNet
    behaviour is not reproduced: MXNet scales the caller's gradient array in
    place by ``rescale_grad``; JAX arrays are immutable. The result is MXNet's
    bit for bit on the golden runs.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = mxopt.adadelta(rho=0.9, epsilon=1e-5)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.5, -4.0])}, state, params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]
    [0.99, -1.99]

    Args:
      learning_rate: ignored, as in MXNet (kept so that code passing it runs).
      rho: decay of both running averages, in [0, 1).
      epsilon: added inside both square roots, >= 0.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`AdaDeltaState`.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("rho", rho, low=0.0, high=1.0, high_open=True)
    v.check_scalar("epsilon", epsilon, low=0.0)
    opt = E.Optimizer(who="mxopt.adadelta", kernel=K.adadelta_update, state_cls=AdaDeltaState,
                      hyper=dict(rho=rho, epsilon=epsilon, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient),
                      low_precision_state=False)
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


# ----------------------------------------------------------------------------------
# LARS and LAMB
# ----------------------------------------------------------------------------------

__all__ += ["lars", "lamb", "LARSState", "LARSNoMomentumState", "LAMBState",
            "LARS_KEEPS_RATE", "LARS_CHUNK"]

# MXNet's LARS leaves parameters whose name ends in these (no underscore needed)
# at their plain rate: biases and BatchNorm's gamma and beta.
LARS_KEEPS_RATE = ("gamma", "beta", "bias")
# MXNET_OPTIMIZER_AGGREGATION_SIZE's default for LARS: the Updater hands a list
# call to it four parameters at a time, per dtype.
LARS_CHUNK = 4


class LARSState(NamedTuple):
    """State of :func:`lars` with momentum: MXNet's ``mom``, the base rate of the
    previous step (``last_lr``: MXNet's ``cur_lr``/``last_lr``, for the momentum
    correction; NaN before the first step) and the number of updates done."""
    count: jax.Array
    last_lr: jax.Array
    mom: optax.Updates


class LARSNoMomentumState(NamedTuple):
    """State of :func:`lars` with ``momentum=0`` (MXNet: None): the count and,
    as MXNet's LARS tracks it whatever the momentum, the previous base rate."""
    count: jax.Array
    last_lr: jax.Array


class LAMBState(NamedTuple):
    """State of :func:`lamb`: MXNet's ``(mean, var)`` plus the number of updates
    done (``t = count + 1``)."""
    count: jax.Array
    mean: optax.Updates
    var: optax.Updates


def _stored_dtypes(names, stored):
    # The dtype each leaf's norm is taken in: the params' as the caller holds them.
    return [dict(stored_dtype=jnp.dtype(w.dtype).name) for w in stored]


def _lars_leaf_hyper(names, stored, keep_rate_names=LARS_KEEPS_RATE):
    """LARS's static per-leaf choices: the trust ratio unless the name ends in
    ``gamma``/``beta``/``bias``; the momentum correction for the first chunk of
    four of the first dtype group (what a Gluon list call hands over first);
    the stored dtype for the norms."""
    first_dtype = jnp.dtype(stored[0].dtype) if stored else None
    in_first, out = 0, []
    for name, hp in zip(names, _stored_dtypes(names, stored)):
        corrected = jnp.dtype(hp["stored_dtype"]) == first_dtype and in_first < LARS_CHUNK
        in_first += corrected
        trust = not (keep_rate_names and name.endswith(tuple(keep_rate_names)))
        out.append(dict(hp, trust=trust, corrected=corrected))
    return out


def _base_rates(learning_rate, t):
    """``(cur, prev)``: the base rate of the update with count ``t`` (MXNet's rule
    for an :mod:`mxopt.lr_scheduler` scheduler, optax's ``schedule(t - 1)`` for
    another schedule) and the previous step's where known without the carry
    (schedules and Python constants; None for a traced constant)."""
    if isinstance(learning_rate, lr_scheduler.LRScheduler):
        return learning_rate(t), learning_rate(t - 1)
    if callable(learning_rate):
        return learning_rate(t - 1), learning_rate(t - 2)
    return learning_rate, (None if v.is_traced(learning_rate) else learning_rate)


@_documented
def lars(learning_rate: ScalarOrSchedule = 0.01, momentum: Scalar = 0.0,
         lazy_update: bool = True, eta: Scalar = 0.001, eps: Scalar = 0.0,
         momentum_correction: bool = True, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
         clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
         wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
         multi_precision: bool = False, skip_nonfinite: bool = False,
         keep_rate_names: Sequence[str] = LARS_KEEPS_RATE
         ) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's LARS (``multi_sum_sq``, ``multi_lars``, then
    ``preloaded_multi_sgd_mom_update`` / ``preloaded_multi_sgd_update``).

    Per leaf, in float32, with ``lr`` and ``wd`` this leaf's::

        w_norm = ||w||,  g_norm = ||grad||             # the raw, unclipped gradient
        lr' = lr * eta * w_norm / (g_norm * rescale_grad + wd * w_norm + eps)
              if w_norm > 0 and g_norm > 0, else lr    # the trust ratio
        mom = momentum' * mom - (lr' * wd) * w - lr' * clip(rescale_grad * grad)
        w = w + mom                                    # SGD's rule (mxopt.sgd)

    Leaves whose name ends in ``gamma``, ``beta`` or ``bias`` keep ``lr' =
    lr`` (MXNet's name rule, on the leaf names of :mod:`mxopt.multipliers`:
    ``"Dense_0/bias"`` keeps its rate; Flax's norm ``scale`` does not). A
    Gluon Trainer gives MXNet no names, so there every parameter, biases too,
    gets the trust ratio: ``keep_rate_names=()`` does the same. The norms are
    taken from the params as stored (the float16 weight and gradient under
    ``multi_precision``, not the masters).

    ``momentum'`` is ``momentum * cur_lr / last_lr`` (``momentum_correction``,
    on the base rates before ``lr_mult``; 1 at the first step and where
    ``last_lr`` is 0) for the first four floating leaves of the first dtype in
    the params' order, and ``momentum`` for the others: MXNet recomputes it on
    every optimizer call, and a Trainer's list call reaches LARS in chunks of
    four, so only the first chunk sees a rate change. This function is one such
    list call per step; the class form (:class:`mxopt.LARS`) follows the calls
    as they are made (one index at a time, only the first parameter after a
    change sees it).

    With ``param_idx2name`` MXNet's LARS sets ``wd_mult`` to 0 for every name
    not ending in ``_weight`` (``_gamma`` included): pass ``wd_mult=lambda
    name, leaf: float(name.endswith("_weight"))`` for that rule.

    The norms are ``jnp.sum`` reductions (correct on sharded leaves), where
    MXNet sums sequentially in float32: results agree to about 1e-7 relative
    (the twin :func:`mxopt.reference.multi_sum_sq` is MXNet's bit for bit).

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"fc_weight": jnp.array([3.0, 4.0]), "fc_bias": jnp.array([1.0])}
    >>> tx = mxopt.lars(0.1, momentum=0.9, eta=0.1)
    >>> state = tx.init(params)
    >>> grads = {"fc_weight": jnp.array([0.6, 0.8]), "fc_bias": jnp.array([0.5])}
    >>> updates, state = tx.update(grads, state, params)
    >>> new = optax.apply_updates(params, updates)
    >>> [round(x, 4) for x in new["fc_weight"].tolist() + new["fc_bias"].tolist()]
    [2.97, 3.96, 0.95]

    Args:
      learning_rate: float >= 0, JAX scalar, optax schedule (``schedule(count)``)
        or :mod:`mxopt.lr_scheduler` scheduler (MXNet's rule). MXNet's LARS
        passes no rate of its own: 0.01 by default, and a scheduler's
        ``base_lr`` is never overwritten.
      momentum: in [0, 1). A JAX scalar keeps the buffer and follows MXNet's
        ``momentum > 0`` test elementwise.
      lazy_update: accepted for MXNet's signature (row_sparse only).
      eta: the LARS coefficient, >= 0.
      eps: added to the trust ratio's denominator, >= 0.
      momentum_correction: scale the momentum by the base rate's change.
      {base_args}
      keep_rate_names: the name endings whose leaves keep the plain rate
        (MXNet's rule where it knows the names); ``()`` gives every leaf the
        trust ratio, as MXNet does under a Gluon Trainer, which passes none.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`LARSState`
      (:class:`LARSNoMomentumState` for a Python ``momentum=0``), wrapped as in
      :func:`rmsprop` by ``skip_nonfinite`` and ``multi_precision``. Its
      ``last_lr`` is MXNet's ``cur_lr`` (NaN for MXNet's None) in ``.states``
      files (:mod:`mxopt.interop`).
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True)
    v.check_scalar("eta", eta, low=0.0)
    v.check_scalar("eps", eps, low=0.0)
    v.check_bool("lazy_update", lazy_update)
    v.check_bool("momentum_correction", momentum_correction)
    if isinstance(keep_rate_names, str) or not all(
            isinstance(n, str) and n for n in keep_rate_names):
        raise TypeError(f"keep_rate_names must be a sequence of non-empty name endings, e.g. "
                        f"{LARS_KEEPS_RATE} (MXNet's) or () (no name keeps its rate), got "
                        f"{keep_rate_names!r}")
    kernel, state_cls = _momentum_path(momentum, K.lars_mom_update, K.lars_update,
                                       LARSState, LARSNoMomentumState)
    def advance(last_lr, hp):
        cur, prev = _base_rates(learning_rate, hp["t"])
        return K.lars_momentum_advance(last_lr, cur, prev, hp)

    # MXNet's cur_lr/last_lr: NaN before the first step (MXNet's None).
    carry = E.Carry(field="last_lr", init=float("nan"), advance=advance, per_leaf=False)
    opt = E.Optimizer(who="mxopt.lars", rate_parse=tuple_float, kernel=kernel,
                      state_cls=state_cls, carry=carry,
                      leaf_hyper=functools.partial(_lars_leaf_hyper,
                                                   keep_rate_names=tuple(keep_rate_names)),
                      hyper=dict(momentum=momentum, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient, eta=eta, eps=eps,
                                 momentum_correction=momentum_correction))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


def _check_bound(name: str, value: Optional[Scalar]) -> None:
    v.check_scalar(name, value, low=0.0, allow_none=True)


def _truthy(value: Optional[Scalar]) -> Optional[Scalar]:
    # MXNet's Python layer passes a bound only when it is truthy: 0 is off.
    return None if value is None or K.is_static(value, 0.0) else value


@_documented
def lamb(learning_rate: ScalarOrSchedule = 0.001, beta1: Scalar = 0.9, beta2: Scalar = 0.999,
         epsilon: Scalar = 1e-6, lower_bound: Optional[Scalar] = None,
         upper_bound: Optional[Scalar] = None, bias_correction: bool = True, *,
         wd: Scalar = 0.0, rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
         lr_mult: multipliers.MultiplierSpec = None, wd_mult: multipliers.MultiplierSpec = None,
         begin_num_update: int = 0, multi_precision: bool = False,
         skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's LAMB (``multi_lamb_update`` / ``multi_mp_lamb_update``).

    Per leaf, with ``t`` its update count (``begin_num_update`` included)::

        r1 = ||w||                                     # before the step, as stored
        g = clip(rescale_grad * grad, clip_gradient)   # wd is not in the moments
        mean = beta1 * mean + (1 - beta1) * g
        var = beta2 * var + (1 - beta2) * g * g
        u = (mean / (1 - beta1**t)) / (sqrt(var / (1 - beta2**t)) + epsilon) + wd * w
        r2 = ||u||
        r1 = min(max(r1, lower_bound), upper_bound)    # each only if set and > 0
        w = w - lr * (r1 / r2) * u                     # ratio 1 if r1 or r2 is 0

    ``bias_correction=False`` drops the two ``1 - beta**t``. The powers are
    float32 ``powf``; ``clip_gradient`` None or 0 is off. ``r1`` is the norm
    of the stored weight (float16 under ``multi_precision``, not the master).
    Unlike ``optax.lamb``: the decay is inside the trust ratio's ``u`` but not
    in the moments (as there), epsilon is outside the root of the corrected
    variance, and the ratio is clamped only by ``lower_bound``/``upper_bound``.

    MXNet evaluates ``u``'s line in double and sums the norms sequentially in
    float32; here both are float32 (the norms ``jnp.sum`` reductions, correct
    on sharded leaves): results agree to about 1e-7 relative
    (:func:`mxopt.reference.multi_lamb_update` is MXNet's bit for bit). MXNet's
    Updater always runs ``multi_lamb_update``, even for one index, so the list
    call and single calls agree.

    On XLA:CPU the step writes ``u`` out once per leaf (a parameter-sized
    temporary) for ``r2``'s reduction: XLA:CPU's reductions take in the
    parameters and their squares, not a computed ``u``. With
    ``multi_precision``, the float16/bfloat16 copies the norms read are
    temporaries too (for LARS as well); a float32 LARS step has none.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"fc_weight": jnp.array([3.0, 4.0])}
    >>> tx = mxopt.lamb(0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"fc_weight": jnp.array([1.0, -1.0])}, state, params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["fc_weight"].tolist()]
    [2.6464, 4.3536]

    Args:
      learning_rate: float >= 0, JAX scalar, optax schedule or
        :mod:`mxopt.lr_scheduler` scheduler. MXNet's signature rate (0.001)
        overwrites a scheduler's ``base_lr`` in the class form.
      beta1, beta2: decay of the moments, in [0, 1).
      epsilon: added to the root, >= 0.
      lower_bound, upper_bound: None, 0 (off, as in MXNet) or a bound > 0 on
        ``r1``. MXNet silently ignores a negative bound; mxopt refuses it.
      bias_correction: divide the moments by ``1 - beta**t``.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`LAMBState`,
      wrapped as in :func:`rmsprop` by ``skip_nonfinite`` and ``multi_precision``.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    _check_betas(beta1=beta1, beta2=beta2)
    v.check_scalar("epsilon", epsilon, low=0.0)
    _check_bound("lower_bound", lower_bound)
    _check_bound("upper_bound", upper_bound)
    v.check_bool("bias_correction", bias_correction)
    opt = E.Optimizer(
        who="mxopt.lamb", kernel=K.lamb_update, state_cls=LAMBState, fold=K.lamb_fold,
        leaf_hyper=_stored_dtypes, rate_parse=tuple_float,
        hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient, beta1=beta1,
                   beta2=beta2, epsilon=epsilon, lower_bound=_truthy(lower_bound),
                   upper_bound=_truthy(upper_bound), bias_correction=bias_correction))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


# ----------------------------------------------------------------------------------
# ccSGD, Test, DCASGD, SGLD, GroupAdaGrad, LBSGD (issue 18)
# ----------------------------------------------------------------------------------

__all__ += ["ccsgd", "test_optimizer", "dcasgd", "sgld", "groupadagrad", "lbsgd",
            "MXNetTestState", "DCASGDState", "SGLDState", "GroupAdaGradState", "LBSGDState",
            "LBSGDNoMomentumState", "CCSGD_DEPRECATION", "check_dcasgd_momentum",
            "check_groupadagrad_leaf", "LBSGD_STRATEGIES"]

CCSGD_DEPRECATION = ("ccSGD is MXNet's deprecated name for SGD (identical in every "
                     "respect): use {replacement} instead")


class MXNetTestState(NamedTuple):
    """State of :func:`test_optimizer`: MXNet's state (a float32 copy of the
    weight after each step, zeros before the first) and the count, which MXNet's
    Test never advances (it stays at ``begin_num_update``)."""
    __test__ = False  # not a pytest test class, whatever imports it
    count: jax.Array
    weight_copy: optax.Updates


class DCASGDState(NamedTuple):
    """State of :func:`dcasgd`: MXNet's ``(None, weight_previous)`` (the
    momentum-free state; the weight before the last step, a copy of the param
    at ``init``) plus the count."""
    count: jax.Array
    weight_previous: optax.Updates


class SGLDState(NamedTuple):
    """State of :func:`sgld`: the PRNG key the next step's noise comes from
    (MXNet keeps no state; its noise comes from the global ``mx.random``) plus
    the count."""
    count: jax.Array
    key: jax.Array


class GroupAdaGradState(NamedTuple):
    """State of :func:`groupadagrad`: MXNet's row-wise ``history`` (shape
    ``(rows, 1)`` per 2-D param) plus the count."""
    count: jax.Array
    history: optax.Updates


class LBSGDState(NamedTuple):
    """State of :func:`lbsgd` with momentum: the number of calls ``num_cums``
    (MXNet's, from ``begin_epoch * updates_per_epoch``), the gradients
    accumulated since the last update ``cum_grad`` (MXNet keeps them on the
    optimizer), MXNet's ``mom``, and the count."""
    count: jax.Array
    num_cums: jax.Array
    cum_grad: optax.Updates
    mom: optax.Updates


class LBSGDNoMomentumState(NamedTuple):
    """State of :func:`lbsgd` with ``momentum=0`` (MXNet's state: None):
    ``num_cums``, ``cum_grad`` and the count."""
    count: jax.Array
    num_cums: jax.Array
    cum_grad: optax.Updates


@_documented
def ccsgd(learning_rate: ScalarOrSchedule = 0.01, momentum: Scalar = 0.0,
          lazy_update: bool = True, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
          clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
          wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
          multi_precision: bool = False,
          skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's ccSGD: :func:`sgd` under its deprecated name (deprecated).

    MXNet's ``ccSGD`` is a subclass of ``SGD`` that changes nothing, kept for
    backward compatibility; this is :func:`sgd`, with a ``DeprecationWarning``
    naming the replacement. The result is :func:`sgd`'s bit for bit.

    >>> import warnings, jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", DeprecationWarning)
    ...     tx = mxopt.ccsgd(0.1, momentum=0.9)
    >>> updates, state = tx.update({"w": jnp.array([0.5, 0.5])}, tx.init(params), params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]
    [0.95, -2.05]

    Args:
      learning_rate, momentum, lazy_update: as in :func:`sgd`.
      {base_args}

    Returns:
      :func:`sgd`'s transformation (state :class:`SGDState` or
      :class:`SGDNoMomentumState`).
    """
    warnings.warn(CCSGD_DEPRECATION.format(replacement="mxopt.sgd"), DeprecationWarning,
                  stacklevel=v.caller_stacklevel())
    return sgd(learning_rate, momentum, lazy_update, wd=wd, rescale_grad=rescale_grad,
               clip_gradient=clip_gradient, lr_mult=lr_mult, wd_mult=wd_mult,
               begin_num_update=begin_num_update, multi_precision=multi_precision,
               skip_nonfinite=skip_nonfinite)


@_documented
def test_optimizer(learning_rate: ScalarOrSchedule = 0.01, *, wd: Scalar = 0.0,
                   rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
                   lr_mult: multipliers.MultiplierSpec = None,
                   wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
                   multi_precision: bool = False,
                   skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's ``Test`` optimizer (registered as ``test``), exactly.

    Named ``test_optimizer`` rather than ``test`` so that test collectors do not
    take it for a test (it is marked ``__test__ = False`` as well). Each step::

        w = w + grad * rescale_grad
        weight_copy = w                    # float32

    That is all: MXNet's Test reads no learning rate, decay, clip bound,
    schedule or multiplier (they are accepted, checked and ignored), and never
    counts updates, so the state's count stays at ``begin_num_update``. It
    *ascends* the gradient. Its state is a float32 copy of the weight (zeros
    before the first step), as MXNet's ``zeros(weight.shape)`` default dtype
    makes it. Bit for bit MXNet's on the golden runs.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = mxopt.test_optimizer(rescale_grad=0.5)
    >>> updates, state = tx.update({"w": jnp.array([0.5, 4.0])}, tx.init(params), params)
    >>> optax.apply_updates(params, updates)["w"].tolist(), int(state.count)
    ([1.25, 0.0], 0)

    Args:
      learning_rate: ignored, as in MXNet.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`MXNetTestState`.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    opt = E.Optimizer(who="mxopt.test_optimizer", kernel=K.test_update,
                      state_cls=MXNetTestState, hyper=dict(rescale_grad=rescale_grad),
                      buffer_init={"weight_copy": _float32_zeros}, counts=False)
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


test_optimizer.__test__ = False


def _float32_zeros(p):
    # MXNet's zeros(weight.shape): float32 whatever the weight's dtype; made from
    # the param so that it is sharded like it (abstract params: from the struct).
    if isinstance(p, jax.ShapeDtypeStruct):
        return jnp.zeros_like(p, dtype=jnp.float32)
    return E.zeros_like_sharded(p).astype(jnp.float32)


def _copy(p):
    # DCASGD's weight.copy(); an abstract param has no values (zeros of its type).
    if isinstance(p, jax.ShapeDtypeStruct):
        return jnp.zeros_like(p)
    return jnp.array(p, copy=True)


def _row_zeros(p):
    # GroupAdaGrad's zeros((rows, 1)): a reduction of the param's zeros keeps its
    # row sharding (a constant would be unsharded).
    return jnp.sum(E.zeros_like_sharded(p) if not isinstance(p, jax.ShapeDtypeStruct)
                   else jnp.zeros_like(p), axis=1, keepdims=True)


def check_dcasgd_momentum(momentum: Scalar) -> None:
    """MXNet 1.9.1's DCASGD raises for any momentum other than 0."""
    v.check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True)
    # A traced momentum (optax.inject_hyperparams injects the default 0 too)
    # cannot be checked; it is never read.
    if not v.is_traced(momentum) and v.static_value(momentum) != 0.0:
        raise ValueError(f"momentum={momentum!r}: MXNet 1.9.1's DCASGD raises for any momentum "
                         f"other than 0 (its update tests `if mom:` on the momentum NDArray, "
                         f"which raises 'The truth value of an NDArray with multiple elements "
                         f"is ambiguous'), so no MXNet run has one to reproduce; pass "
                         f"momentum=0.0")


@_documented
def dcasgd(learning_rate: ScalarOrSchedule = 0.01, momentum: Scalar = 0.0,
           lamda: Scalar = 0.04, *, wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
           clip_gradient: Optional[Scalar] = None, lr_mult: multipliers.MultiplierSpec = None,
           wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
           multi_precision: bool = False,
           skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's DCASGD (delay-compensated asynchronous SGD, Python NDArray
    operators). Each step::

        g = clip(rescale_grad * grad, clip_gradient)
        w_new = w - lr * ((g + wd * w) + lamda * g * g * (w - weight_previous))
        weight_previous = w

    ``weight_previous`` starts as a copy of the param (``init`` copies the
    params, as MXNet's ``create_state`` copies the weight), so the first step
    has no delay term. MXNet's quirks, reproduced: ``clip_gradient=0`` clips
    every gradient to 0 (the Python-side rule). MXNet 1.9.1 raises for any
    ``momentum`` other than 0 (``if mom:`` on an NDArray), so mxopt refuses it
    with a ValueError saying so. Bit for bit MXNet's on the golden runs.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = mxopt.dcasgd(0.1, lamda=0.5)
    >>> updates, state = tx.update({"w": jnp.array([0.5, 0.5])}, tx.init(params), params)
    >>> [round(x, 4) for x in optax.apply_updates(params, updates)["w"].tolist()]
    [0.95, -2.05]

    Args:
      learning_rate: as in :func:`sgd`.
      momentum: must be 0 (see above); a traced value (``optax.inject_hyperparams``)
        cannot be checked and is ignored.
      lamda: the delay-compensation scale, >= 0.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`DCASGDState`.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    check_dcasgd_momentum(momentum)
    v.check_scalar("lamda", lamda, low=0.0)
    opt = E.Optimizer(who="mxopt.dcasgd", kernel=K.dcasgd_update, state_cls=DCASGDState,
                      hyper=dict(lamda=lamda, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient),
                      buffer_init={"weight_previous": _copy})
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


def _check_key(key: Any) -> jax.Array:
    """A PRNG key as SGLD's state carries it: raw ``uint32`` key data (a typed
    key, from ``jax.random.key``, is unwrapped)."""
    if isinstance(key, (jax.Array, np.ndarray)) and jax.dtypes.issubdtype(
            key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got an array of "
                             f"{key.shape} keys")
        return jax.random.key_data(key)
    if (not isinstance(key, (jax.Array, np.ndarray)) or key.dtype != np.uint32
            or key.ndim != 1):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key(seed) or "
                        f"jax.random.PRNGKey(seed)), got {type(key).__name__} "
                        f"{getattr(key, 'dtype', '')}{list(np.shape(key))}")
    return jnp.asarray(key)


@_documented
def sgld(learning_rate: ScalarOrSchedule = 0.01, *, key: jax.Array, wd: Scalar = 0.0,
         rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
         lr_mult: multipliers.MultiplierSpec = None, wd_mult: multipliers.MultiplierSpec = None,
         begin_num_update: int = 0, multi_precision: bool = False,
         skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's SGLD (stochastic gradient Langevin dynamics). Each step::

        g = clip(rescale_grad * grad, clip_gradient)
        w = w - lr / 2 * (g + wd * w) + normal(0, sqrt(lr))

    with ``lr`` after schedules and ``lr_mult``, the noise drawn per element in
    the weight's dtype. MXNet draws the noise from its global ``mx.random``;
    here it comes from ``key``, carried in the state (:class:`SGLDState`), so a
    run is reproducible from its key: each step splits the key once per
    floating leaf in the params' flatten order (``key, leaf_key =
    jax.random.split(key)``) and draws ``jax.random.normal(leaf_key)``. The
    deterministic half-step is MXNet's bit for bit (NDArray operators, each
    scalar an operand; ``clip_gradient=0`` clips every gradient to 0); the
    drift and the noise are summed before they reach the weight (MXNet adds
    them one after the other), which rounds differently only in the random
    part. A skipped step (``skip_nonfinite``) keeps the key.

    >>> import jax, jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.zeros(10000)}
    >>> tx = mxopt.sgld(0.01, key=jax.random.key(0))
    >>> updates, state = tx.update({"w": jnp.ones(10000)}, tx.init(params), params)
    >>> w = optax.apply_updates(params, updates)["w"]
    >>> # the drift -lr/2 * g = -0.005 plus noise of standard deviation sqrt(lr) = 0.1
    >>> bool(abs(w.mean() + 0.005) < 0.003), bool(abs(w.std() - 0.1) < 0.003)
    (True, True)

    Args:
      learning_rate: as in :func:`sgd`; also the noise's variance.
      key: a JAX PRNG key (``jax.random.key(seed)`` or
        ``jax.random.PRNGKey(seed)``); required, so every run says where its
        noise comes from.
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SGLDState`.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    key = _check_key(key)
    opt = E.Optimizer(who="mxopt.sgld", kernel=K.sgld_update, state_cls=SGLDState,
                      hyper=dict(rescale_grad=rescale_grad, clip_gradient=clip_gradient),
                      carry=E.Carry(field="key", init=key, advance=K.sgld_advance))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


def check_groupadagrad_leaf(name: str, param: Any, wd: Any) -> None:
    """GroupAdaGrad's rules for one parameter (MXNet asserts both): a 2-D weight,
    and no weight decay after multipliers."""
    if jnp.ndim(param) != 2:
        raise ValueError(f"GroupAdaGrad: {name} has shape {tuple(jnp.shape(param))}; "
                         f"GroupAdaGrad keeps one history entry per row and takes 2-D weights "
                         f"only (MXNet asserts len(weight.shape) == 2): reshape it to 2-D, or "
                         f"give it another optimizer (optax.multi_transform)")
    if not v.is_traced(wd) and v.static_value(wd) is not None and v.static_value(wd) != 0.0:
        raise ValueError(f"GroupAdaGrad: {name} has weight decay {v.static_value(wd)!r} after "
                         f"multipliers; GroupAdaGrad does not support weight decay (MXNet "
                         f"asserts wd == 0): pass wd=0, or wd_mult 0 for this parameter")


@_documented
def groupadagrad(learning_rate: ScalarOrSchedule = 0.01, eps: Scalar = 1e-5, *,
                 wd: Scalar = 0.0, rescale_grad: Scalar = 1.0,
                 clip_gradient: Optional[Scalar] = None,
                 lr_mult: multipliers.MultiplierSpec = None,
                 wd_mult: multipliers.MultiplierSpec = None, begin_num_update: int = 0,
                 multi_precision: bool = False,
                 skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's GroupAdaGrad (``mxnet.optimizer.contrib``, registered as
    ``groupadagrad``; dense gradients, Python NDArray operators): AdaGrad with one
    accumulator per row of a 2-D weight. Each step::

        g = clip(rescale_grad * grad, clip_gradient)
        history = history + mean(g * g, axis=1, keepdims=True)      # (rows, 1)
        w = w - (lr * g) / sqrt(history + eps)

    MXNet's rules, enforced by ``init`` with an error naming the leaf: every
    floating param is 2-D, and its weight decay after multipliers is 0 (MXNet
    asserts both). The row mean is MXNet's (a Kahan-compensated sum, then / n).
    ``clip_gradient=0`` clips every gradient to 0; the history is float32, as
    MXNet keeps it, so float16 weights need ``multi_precision``. Bit for bit
    MXNet's on the golden runs.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"emb_weight": jnp.ones((2, 2))}
    >>> tx = mxopt.groupadagrad(0.1, eps=0.0)
    >>> grads = {"emb_weight": jnp.array([[3.0, 4.0], [1.0, 1.0]])}
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> state.history["emb_weight"].tolist()
    [[12.5], [1.0]]

    Args:
      learning_rate: as in :func:`sgd`.
      eps: added inside the square root, >= 0.
      {base_args} Weight decay must come out 0 for every param.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`GroupAdaGradState`.
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("eps", eps, low=0.0)
    if wd_mult is None and not v.is_traced(wd) and v.static_value(wd) != 0.0:
        check_groupadagrad_leaf("every parameter", jnp.zeros((1, 1)), wd)
    opt = E.Optimizer(who="mxopt.groupadagrad", kernel=K.group_adagrad_update,
                      state_cls=GroupAdaGradState,
                      hyper=dict(eps=eps, rescale_grad=rescale_grad, clip_gradient=clip_gradient),
                      low_precision_state=False, buffer_init={"history": _row_zeros},
                      leaf_rule=lambda name, p, leaf_wd: check_groupadagrad_leaf(
                          f"the leaf {name!r}", p, leaf_wd))
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)


LBSGD_STRATEGIES = ("linear", "power2", "sqrt", "lars")


@_documented
def lbsgd(learning_rate: ScalarOrSchedule = 0.01, momentum: Scalar = 0.0,
          multi_precision: bool = False, warmup_strategy: str = "linear",
          warmup_epochs: int = 5, batch_scale: int = 1, updates_per_epoch: int = 32,
          begin_epoch: int = 0, num_epochs: int = 60, *, wd: Scalar = 0.0,
          rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
          lr_mult: multipliers.MultiplierSpec = None, wd_mult: multipliers.MultiplierSpec = None,
          begin_num_update: int = 0,
          skip_nonfinite: bool = False) -> optax.GradientTransformationExtraArgs:
    """MXNet 1.9.1's LBSGD (large-batch SGD: gradient accumulation and warmup).

    Every call adds the gradient to ``cum_grad`` and counts ``num_cums``
    (starting at ``begin_epoch * updates_per_epoch + 1``). Only when
    ``num_cums % batch_scale == 0`` does the weight change::

        g = cum_grad / batch_scale;  cum_grad = 0
        lr = lr * lbmult
        momentum > 0:  mom = momentum * mom - (lr * wd) * w - lr * clip(rescale_grad * g)
                       w = w + mom                              # sgd_mom_update
        momentum = 0:  w = (1 - lr * wd) * w - lr * clip(rescale_grad * g)  # sgd_update

    Other calls leave the weight and ``mom`` as they are. ``lbmult``, with
    ``nwup = warmup_epochs * updates_per_epoch``: ``batch_scale`` once
    ``num_cums >= nwup``; before, ``'linear'`` ``1 + (batch_scale - 1) *
    num_cums / nwup``, ``'power2'`` the same with both squared, ``'sqrt'`` with
    the square root of the ratio, any other string 1; ``'lars'`` instead
    ``sqrt(|w|^2 / (|g|^2 + wd * |w|^2 + 1e-18))`` clipped to [0.01, 100], from
    the averaged gradient before rescaling and clipping.

    MXNet's quirks, reproduced: it reads the learning rate *before* counting, so
    with an :mod:`mxopt.lr_scheduler` scheduler the first floating leaf of each
    step (flatten order) gets the rate at the previous count and the others the
    rate at the new one (optax schedules see the count as usual);
    ``clip_gradient`` None or 0 is off (kernel rule); ``num_epochs`` is unused.
    ``multi_precision`` keeps float32 master weights (MXNet's generic path: its
    own float16 branch is never reached). A 'lars' norm is a float32 sum (MXNet
    sums with NumPy, pairwise), so it can differ in the last bits. One MXNet
    behaviour is not reproduced: MXNet keeps a reference to the caller's first
    gradient array as the start of the sum, so a reused buffer changes it; JAX
    arrays are immutable.

    >>> import jax.numpy as jnp, optax, mxopt
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = mxopt.lbsgd(0.1, batch_scale=2, warmup_epochs=0)
    >>> state = tx.init(params)
    >>> u1, state = tx.update({"w": jnp.array([1.0, 1.0])}, state, params)
    >>> u2, state = tx.update({"w": jnp.array([3.0, 3.0])}, state, params)
    >>> u1["w"].tolist(), [round(x, 4) for x in u2["w"].tolist()]   # 2 * 0.1 * mean
    ([0.0, 0.0], [-0.4, -0.4])

    Args:
      learning_rate: as in :func:`sgd`.
      momentum: in [0, 1); a buffer only when > 0. A JAX scalar (e.g. under
        ``optax.inject_hyperparams``) keeps the buffer and runs the momentum
        kernel, whose rounding differs from MXNet's momentum-free
        ``sgd_update`` at 0.
      multi_precision: float32 master weights (in MXNet's position).
      warmup_strategy: ``'linear'``, ``'power2'``, ``'sqrt'``, ``'lars'`` (any
        other string: no warmup multiplier, as in MXNet).
      warmup_epochs, updates_per_epoch: ints >= 0; the warmup lasts their product
        in calls.
      batch_scale: int >= 1, the calls accumulated per update.
      begin_epoch: int >= 0; ``num_cums`` starts at ``begin_epoch *
        updates_per_epoch``.
      num_epochs: accepted, unused (as in MXNet).
      {base_args}

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`LBSGDState`
      (:class:`LBSGDNoMomentumState` for ``momentum=0``).
    """
    _base_checks(learning_rate, wd, rescale_grad, clip_gradient, begin_num_update,
                 multi_precision, skip_nonfinite)
    v.check_scalar("momentum", momentum, low=0.0, high=1.0, high_open=True)
    if not isinstance(warmup_strategy, str):
        raise TypeError(f"warmup_strategy must be a str ({', '.join(LBSGD_STRATEGIES)}), got "
                        f"{type(warmup_strategy).__name__}")
    for name, value, low in (("warmup_epochs", warmup_epochs, 0), ("batch_scale", batch_scale, 1),
                             ("updates_per_epoch", updates_per_epoch, 0),
                             ("begin_epoch", begin_epoch, 0), ("num_epochs", num_epochs, 0)):
        if isinstance(value, (jax.Array, np.ndarray)) and value.shape == () and jnp.issubdtype(
                value.dtype, jnp.integer) and v.is_traced(value):
            continue  # optax.inject_hyperparams' (checked when it was a Python int)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer, jax.Array,
                                                             np.ndarray)) or (
                np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.integer)
                or int(value) < low):
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not v.is_traced(batch_scale):
        batch_scale = int(batch_scale)
    if isinstance(momentum, (jax.Array, np.ndarray)) or momentum > 0:
        kernel, state_cls = K.lbsgd_update, LBSGDState
    else:
        kernel, state_cls = K.lbsgd_plain_update, LBSGDNoMomentumState
    first = begin_epoch * updates_per_epoch  # num_cums of a fresh state
    opt = E.Optimizer(
        who="mxopt.lbsgd", kernel=kernel, state_cls=state_cls,
        hyper=dict(momentum=momentum, rescale_grad=rescale_grad, clip_gradient=clip_gradient,
                   batch_scale=batch_scale, nwup=warmup_epochs * updates_per_epoch,
                   warmup_strategy=warmup_strategy),
        # A NumPy scalar where it is known, made a JAX array by init (a JAX
        # array made here would sit on one device, not on the mesh init runs
        # under); traced (inject_hyperparams), a JAX array.
        carry=E.Carry(field="num_cums",
                      init=(np.int32(first) if isinstance(first, int)
                            else jnp.asarray(first, jnp.int32)),
                      advance=K.lbsgd_advance, per_leaf=False),
        rate_before_count=True)
    return _fused(opt, learning_rate, wd, lr_mult, wd_mult, begin_num_update, multi_precision,
                  skip_nonfinite)
