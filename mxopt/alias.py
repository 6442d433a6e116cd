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

__all__ = ["rmsprop", "rmsprop_chain", "RMSPropState", "CenteredRMSPropState"]


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
