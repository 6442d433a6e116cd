"""``mxopt.rmsprop``: MXNet 1.9.1's ``mxnet.optimizer.RMSProp`` in one call."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from mxopt import _validation as v
from mxopt import multipliers, precision, transforms
from mxopt import transforms as T
from mxopt.transforms import Scalar, ScalarOrSchedule

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
        check sums the gradients (one more read of them); a caller that has
        checked them already (dynamic loss scaling does) can pass the scalar
        bool as ``tx.update(grads, state, params, grads_finite=flag)``.

    Integer and bool leaves pass through untouched and get no state.

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
    v.check_scalar("wd", wd, low=0.0)
    v.check_scalar("rescale_grad", rescale_grad, low=0.0, low_open=True)
    v.check_scalar("clip_gradient", clip_gradient, low=0.0, allow_none=True)
    v.check_bool("multi_precision", multi_precision)
    v.check_bool("skip_nonfinite", skip_nonfinite)
    count0 = T._initial_count(begin_num_update)
    if multi_precision:
        # skip_nonfinite inside the master weights, so the check and the skipped
        # update see float32 gradients and updates; master_weights passes
        # grads_finite on.
        return precision.master_weights(rmsprop(
            learning_rate, gamma1, gamma2, epsilon, centered, clip_weights, wd=wd,
            rescale_grad=rescale_grad, clip_gradient=clip_gradient, lr_mult=lr_mult,
            wd_mult=wd_mult, begin_num_update=begin_num_update, skip_nonfinite=skip_nonfinite))

    def gradient(grad, w, wd_leaf):
        g = T._decay(T._rescale(grad, rescale_grad), w, wd_leaf)
        return g if T._clip_is_static_off(clip_gradient) else T._clip(g, clip_gradient)

    def weight_update(u, w):
        if T._clip_is_static_off(clip_weights):
            return u
        return T._clipped_weight_update(w, u, clip_weights)

    # finite: None, or a traced bool (skip_nonfinite) choosing between the new
    # state and update and the old state and no update. The weight update is
    # computed from the chosen state, so the loop writing w reads the buffer the
    # loop writing n wrote (in place) rather than the old n it overwrote.
    def plain_leaf(grad, w, n, lr, wd_leaf, finite):
        g = gradient(grad, w, wd_leaf)
        n = _keep_if(finite, T._mean_square(g, n, gamma1, centered=False), n)
        # -(lr * x) added to w is exactly MXNet's w - lr * x.
        u = -T._rounded(T._hyper(lr, g) * (g / T._root(n + T._hyper(epsilon, g))))
        return _update_if(finite, weight_update(u, w)), n

    def centered_leaf(grad, w, n, g_avg, delta, lr, wd_leaf, finite):
        g = gradient(grad, w, wd_leaf)
        n = _keep_if(finite, T._mean_square(g, n, gamma1, centered=True), n)
        g_avg = _keep_if(finite, T._mean(g, g_avg, gamma1), g_avg)
        # (lr * g) / root: the centered kernel's grouping, unlike the plain one.
        delta = _keep_if(finite, T._rounded(T._hyper(gamma2, g) * delta)
                         - T._hyper(lr, g) * g / T._centered_root(n, g_avg, epsilon), delta)
        return _update_if(finite, weight_update(delta, w)), n, g_avg, delta

    def init_fn(params):
        T._warn_low_precision(params, "mxopt.rmsprop")
        # Resolving the multipliers here reports a bad name before training starts.
        multipliers.resolve(lr_mult, params, "lr_mult")
        multipliers.resolve(wd_mult, params, "wd_mult")
        zeros = T._zeros_for_float_leaves
        count = count0
        if centered:
            state = CenteredRMSPropState(count=count, n=zeros(params), g_avg=zeros(params),
                                         delta=zeros(params))
        else:
            state = RMSPropState(count=count, n=zeros(params))
        if skip_nonfinite:  # optax.apply_if_finite's state, with the same counters
            state = optax.ApplyIfFiniteState(
                notfinite_count=jnp.zeros([], jnp.int32), last_finite=jnp.array(True, jnp.bool_),
                total_notfinite=jnp.zeros([], jnp.int32), inner_state=state)
        return state

    def update_fn(updates, state, params=None, grads_finite=None, **extra_args):
        del extra_args  # other transformations' (optax.chain passes them to all)
        if params is None:
            raise ValueError("mxopt.rmsprop needs the params: call "
                             "tx.update(grads, state, params)")
        _, treedef = T._check_grads_match_params(updates, params, "mxopt.rmsprop")
        if not skip_nonfinite:
            if grads_finite is not None:
                raise TypeError("mxopt.rmsprop: grads_finite is only used with "
                                "skip_nonfinite=True")
            return rmsprop_step(treedef, updates, state, params, None)
        # As optax.apply_if_finite, never giving up: a step is skipped when any
        # gradient element is NaN or infinite.
        finite = _all_finite(updates) if grads_finite is None else _check_flag(grads_finite)
        updates, inner = rmsprop_step(treedef, updates, state.inner_state, params, finite)
        return updates, optax.ApplyIfFiniteState(
            notfinite_count=jnp.where(finite, jnp.zeros([], jnp.int32),
                                      optax.safe_increment(state.notfinite_count)),
            last_finite=finite,
            total_notfinite=jnp.where(finite, state.total_notfinite,
                                      optax.safe_increment(state.total_notfinite)),
            inner_state=inner)

    def rmsprop_step(treedef, updates, state, params, finite):
        lrs = treedef.flatten_up_to(T._learning_rates(learning_rate, state.count, lr_mult,
                                                      params))
        wds = treedef.flatten_up_to(T._scale_by_multipliers(wd, wd_mult, params, "wd_mult"))
        buffers = ("n", "g_avg", "delta") if centered else ("n",)
        # Traced once per distinct leaf signature, not once per leaf (compile time).
        leaf_fn = T._per_leaf(centered_leaf if centered else plain_leaf)
        columns = [treedef.flatten_up_to(updates), treedef.flatten_up_to(params)]
        columns += [treedef.flatten_up_to(getattr(state, b)) for b in buffers]
        outs = []
        for g, w, *bufs, lr_leaf, wd_leaf in zip(*columns, lrs, wds):
            if T._is_float(w):
                outs.append(leaf_fn(g, w, *bufs, lr_leaf, wd_leaf, finite))
            else:  # integer and bool leaves pass through with no state
                outs.append((jnp.zeros_like(w),) + (optax.MaskedNode(),) * len(buffers))
        new = [treedef.unflatten([o[i] for o in outs]) for i in range(1 + len(buffers))]
        count = _keep_if(finite, optax.safe_increment(state.count), state.count)
        state_cls = CenteredRMSPropState if centered else RMSPropState
        return new[0], state_cls(count, *new[1:])

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _keep_if(finite: Optional[jax.Array], new: jax.Array, old: jax.Array) -> jax.Array:
    """``new`` where ``finite`` (or when it is None), else ``old``: an elementwise
    choice XLA fuses into the loop computing ``new``, where a ``lax.cond`` would
    be a fusion boundary that materialises its result."""
    if finite is None:
        return new
    if jnp.result_type(new) != jnp.result_type(old) or jnp.shape(new) != jnp.shape(old):
        return jnp.where(finite, new, old)  # mixed dtypes: promote as ever
    return jax.lax.select(finite, new, old)


def _all_finite(grads: optax.Updates) -> jax.Array:
    """Whether every element of every floating leaf is finite.

    The sum of a leaf is finite when all its elements are (NaN and inf
    propagate through additions), and XLA reads a plain sum straight from the
    gradient; ``all(isfinite(g))`` made XLA:CPU write a boolean array (a quarter
    of the gradient's bytes) first, and its max/min reductions do not propagate
    NaN. A sum that overflowed from finite values is told apart by an exact
    check that runs only then: a reduction whose combiner ``a + b * 0`` is 0 for
    finite elements and NaN otherwise.
    """
    leaves = [g for g in jax.tree.leaves(grads) if T._is_float(g)]
    if not leaves:
        return jnp.asarray(True)

    def exact(_):
        zeros = [jax.lax.reduce(g, jnp.zeros((), g.dtype),
                                lambda a, b: a + b * jnp.zeros((), b.dtype), tuple(range(g.ndim)))
                 for g in leaves]
        return jnp.isfinite(sum(z.astype(jnp.float32) for z in zeros))

    total_finite = jnp.isfinite(sum(jnp.sum(g).astype(jnp.float32) for g in leaves))
    return total_finite | jax.lax.cond(total_finite, lambda _: jnp.asarray(False), exact, None)


def _check_flag(grads_finite: Any) -> jax.Array:
    flag = jnp.asarray(grads_finite)
    if flag.shape != () or flag.dtype != jnp.bool_:
        raise TypeError("mxopt.rmsprop: grads_finite must be a scalar bool (whether every "
                        f"gradient element is finite), got {flag.dtype}{list(flag.shape)}")
    return flag


def _update_if(finite: Optional[jax.Array], update: jax.Array) -> jax.Array:
    return _keep_if(finite, update, jnp.zeros_like(update))


def rmsprop_chain(learning_rate: ScalarOrSchedule = 0.001, gamma1: Scalar = 0.9,
                  gamma2: Scalar = 0.9, epsilon: Scalar = 1e-8, centered: bool = False,
                  clip_weights: Optional[Scalar] = None, *, wd: Scalar = 0.0,
                  rescale_grad: Scalar = 1.0, clip_gradient: Optional[Scalar] = None,
                  lr_mult: multipliers.MultiplierSpec = None,
                  wd_mult: multipliers.MultiplierSpec = None,
                  begin_num_update: int = 0) -> optax.GradientTransformation:
    """:func:`rmsprop` built as an ``optax.chain`` of :mod:`mxopt.transforms`.

    Same arguments and the same mathematics as :func:`rmsprop`, as separate pieces
    to rearrange or extend. It agrees with :func:`rmsprop` to rounding: the
    centered chain computes ``lr * (g / root)`` where MXNet's kernel (and
    :func:`rmsprop`) computes ``(lr * g) / root``, and each piece is its own pass
    over memory.
    """
    v.check_bool("centered", centered)
    v.check_scalar("gamma2", gamma2, low=0.0, high=1.0, high_open=True)
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
    return optax.chain(*parts)
