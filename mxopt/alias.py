"""``mxopt.rmsprop``: MXNet 1.9.1's ``mxnet.optimizer.RMSProp`` in one call."""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import optax

from mxopt import _engine as E
from mxopt import _kernels as K
from mxopt import _validation as v
from mxopt import multipliers, transforms
from mxopt._engine import ScalarOrSchedule
from mxopt._kernels import Scalar

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


# What the Optimizer-base keywords mean, shared by the docstrings below.
_BASE_ARGS = """
      wd: L2 weight decay, >= 0 (where it enters: the formula above).
      rescale_grad: gradient scale, > 0 (e.g. ``1 / batch_size``).
      clip_gradient: None, 0 or a bound > 0 (what 0 means: above).
      lr_mult, wd_mult: per-parameter multipliers (:mod:`mxopt.multipliers`),
        as in :func:`rmsprop`.
      begin_num_update: the update count to start from, as MXNet's: ``t``
        includes it (a resumed run starts at ``t = begin_num_update + 1``).
      multi_precision: float32 master copies of float16/bfloat16 params.
      skip_nonfinite: skip steps whose gradients are not all finite, as in
        :func:`rmsprop`.
"""

_BASE_RETURNS = """
    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is {state}
      (inside ``optax.ApplyIfFiniteState`` with ``skip_nonfinite`` and
      :class:`mxopt.MasterWeightsState` with ``multi_precision``); each leaf
      is one expression in MXNet's order.
"""


def _with_base_args(doc_state: str):
    """Append the Optimizer-base Args and the Returns section, ahead of the
    docstring's Example."""
    def decorate(fn):
        fn.__doc__ = fn.__doc__.replace(
            "\n\n    Example:\n",
            "\n" + _BASE_ARGS.strip("\n") + "\n" + _BASE_RETURNS.format(state=doc_state)
            + "\n    Example:\n", 1)
        return fn
    return decorate


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


@_with_base_args(":class:`AdamState`")
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
    return E.fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult, wd_mult=wd_mult,
                   begin_num_update=begin_num_update, multi_precision=multi_precision,
                   skip_nonfinite=skip_nonfinite)


def check_python_side_clip(clip_gradient: Optional[Scalar], name: str) -> None:
    """Adamax's ``clip_gradient=0``: MXNet's Python side clips every gradient to
    0, so ``u`` stays 0 and every weight becomes ``0 / 0 = NaN``."""
    if clip_gradient is not None and v.static_value(clip_gradient) == 0.0:
        raise ValueError(f"clip_gradient=0 makes every {name} weight NaN in MXNet (its Python "
                         f"side clips every gradient to 0, so u stays 0 and m / u = 0 / 0): "
                         f"pass None to switch clipping off, or a bound > 0")


@_with_base_args(":class:`AdamaxState`")
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
    return E.fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult, wd_mult=wd_mult,
                   begin_num_update=begin_num_update, multi_precision=multi_precision,
                   skip_nonfinite=skip_nonfinite)


@_with_base_args(":class:`NadamState`")
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
    return E.fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult, wd_mult=wd_mult,
                   begin_num_update=begin_num_update, multi_precision=multi_precision,
                   skip_nonfinite=skip_nonfinite)


@_with_base_args(":class:`FtrlState`")
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
    return E.fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult, wd_mult=wd_mult,
                   begin_num_update=begin_num_update, multi_precision=multi_precision,
                   skip_nonfinite=skip_nonfinite)


@_with_base_args(":class:`FTMLState`")
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
    return E.fused(opt, learning_rate=learning_rate, wd=wd, lr_mult=lr_mult, wd_mult=wd_mult,
                   begin_num_update=begin_num_update, multi_precision=multi_precision,
                   skip_nonfinite=skip_nonfinite)


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
    over memory. ``skip_nonfinite`` wraps the chain in ``optax.apply_if_finite``
    (never giving up, as :func:`rmsprop` does), ``multi_precision`` in
    :func:`mxopt.master_weights`, in that order.
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
        # The count saturates at int32's maximum, so the step is never forced.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)
    # The checks come first, so apply_if_finite sees integer leaves' zero updates.
    tx = optax.chain(E.check_inputs(f"mxopt.rmsprop_chain(centered={centered})"), tx)
    return E.master_weights(tx) if multi_precision else tx
