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

from typing import Any, NamedTuple, Optional

import jax
import numpy as np
import optax

from mxopt import _engine as E
from mxopt import _kernels as K
from mxopt import _validation as v
from mxopt import multipliers
from mxopt._engine import ScalarOrSchedule
from mxopt._kernels import Scalar

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


def _empty_init(params):
    del params
    return optax.EmptyState()


def _warn_early(spec: Any, params: Any, argname: str) -> optax.EmptyState:
    multipliers.resolve(spec, params, argname)  # report bad names before training
    return optax.EmptyState()


def rescale_gradient(rescale_grad: Scalar) -> optax.GradientTransformation:
    """Multiply gradients by MXNet's ``rescale_grad``: :math:`g \\leftarrow r \\cdot g`.

    Args:
      rescale_grad: the factor, usually ``1 / batch_size``; finite and > 0.
    """
    v.check_scalar("rescale_grad", rescale_grad, low=0.0, low_open=True)

    def update_fn(updates, state, params=None):
        del params
        return _map(lambda g: K.rescale(g, rescale_grad), updates, "rescale_gradient"), state

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

    def update_fn(updates, state, params=None):
        if params is None:
            raise E.needs_params("add_weight_decay")
        wds = E.scale_by_multipliers(wd, wd_mult, params, "wd_mult")
        return _map(K.decay, updates, "add_weight_decay", params, wds), state

    return optax.GradientTransformation(lambda p: _warn_early(wd_mult, p, "wd_mult"), update_fn)


def clip_gradient(bound: Optional[Scalar]) -> optax.GradientTransformation:
    """Clip each gradient element to ``[-bound, bound]``, MXNet's ``clip_gradient``.

    ``None`` and ``0`` switch clipping off, as in MXNet's kernel optimizers. NaN
    passes through.

    Args:
      bound: None, 0, or a finite number > 0.
    """
    v.check_scalar("clip_gradient", bound, low=0.0, allow_none=True)

    def update_fn(updates, state, params=None):
        del params
        if K.clip_is_static_off(bound):
            return updates, state
        return _map(lambda g: K.clip(g, bound), updates, "clip_gradient"), state

    return optax.GradientTransformation(_empty_init, update_fn)


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: the running mean of squared gradients."""
    n: optax.Updates


def scale_by_rms(gamma1: Scalar = 0.9, epsilon: Scalar = 1e-8) -> optax.GradientTransformation:
    """Tieleman & Hinton's RMS scaling with epsilon *inside* the square root.

    .. math::
        n \\leftarrow (1 - \\gamma_1)(g \\cdot g) + \\gamma_1 n, \\qquad
        g \\leftarrow g / \\sqrt{n + \\epsilon}

    ``n`` starts at zero and has each parameter's dtype and sharding. Unlike
    ``optax.scale_by_rms`` the default places epsilon inside the root and there is
    no bias correction, as in MXNet.

    Args:
      gamma1: decay of the mean of squares, in [0, 1).
      epsilon: added to ``n`` under the root, >= 0.
    """
    v.check_scalar("gamma1", gamma1, low=0.0, high=1.0, high_open=True)
    v.check_scalar("epsilon", epsilon, low=0.0)

    def init_fn(params):
        return ScaleByRmsState(n=E.zeros_for_float_leaves(params))

    def update_fn(updates, state, params=None):
        del params

        def leaf(g, n):
            n = K.mean_square(g, n, gamma1, centered=False)
            return g / K.root(n + K.hyper(epsilon, g)), n

        updates, n = E.map_leaves(leaf, 2, updates, state.n, who="scale_by_rms")
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
        return ScaleByCenteredRmsState(n=E.zeros_for_float_leaves(params),
                                       g_avg=E.zeros_for_float_leaves(params))

    def update_fn(updates, state, params=None):
        del params

        def leaf(g, n, g_avg):
            n = K.mean_square(g, n, gamma1, centered=True)
            g_avg = K.mean(g, g_avg, gamma1)
            return g / K.centered_root(n, g_avg, epsilon), n, g_avg

        updates, n, g_avg = E.map_leaves(leaf, 3, updates, state.n, state.g_avg,
                                         who="scale_by_centered_rms")
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
    _check_static_count(begin_num_update)

    def init_fn(params):
        _warn_early(lr_mult, params, "lr_mult")
        return ScaleByLearningRateState(count=E.initial_count(begin_num_update))

    def update_fn(updates, state, params=None):
        del params
        lrs = E.learning_rates(learning_rate, state.count, lr_mult, updates)
        updates = _map(lambda u, r: -K.rounded(K.hyper(r, u) * u), updates,
                       "scale_by_learning_rate", lrs)
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
    _check_static_count(begin_num_update)

    def init_fn(params):
        _warn_early(lr_mult, params, "lr_mult")
        return GravesMomentumState(count=E.initial_count(begin_num_update),
                                   delta=E.zeros_for_float_leaves(params))

    def update_fn(updates, state, params=None):
        del params
        lrs = E.learning_rates(learning_rate, state.count, lr_mult, updates)

        def leaf(u, d, r):
            d = K.rounded(K.hyper(gamma2, u) * d) - K.rounded(K.hyper(r, u) * u)
            return d, d

        updates, delta = E.map_leaves(leaf, 2, updates, state.delta, lrs, who="graves_momentum")
        return updates, GravesMomentumState(count=optax.safe_increment(state.count), delta=delta)

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

    def update_fn(updates, state, params=None):
        del params
        mults = multipliers.resolve(lr_mult, updates, "lr_mult")
        return _map(lambda u, m: u if m == 1.0 else K.rounded(K.hyper(m, u) * u), updates,
                    "scale_by_lr_mult", mults), state

    return optax.GradientTransformation(lambda p: _warn_early(lr_mult, p, "lr_mult"), update_fn)


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
        if K.clip_is_static_off(bound):
            return updates, state
        if params is None:
            raise E.needs_params("clip_weights")
        return _map(lambda u, w: K.clipped_weight_update(w, u, bound), updates,
                    "clip_weights", params), state

    return optax.GradientTransformation(_empty_init, update_fn)


def _map(fn, updates: Any, who: str, *others: Any) -> Any:
    """``fn`` over the floating leaves of ``updates`` (and the matching leaves of
    ``others``), integer and bool leaves passed through."""
    return E.map_leaves(lambda *xs: (fn(*xs),), 1, updates, *others, who=who)[0]


def _check_static_count(begin_num_update: Any) -> None:
    # Checked when the optimizer is built, as every other argument; the count
    # itself is made in init.
    if not isinstance(begin_num_update, (jax.Array, np.ndarray)):
        v.check_begin_num_update(begin_num_update, int32=True)
