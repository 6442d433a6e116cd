"""Float32 master weights for float16/bfloat16 parameters (MXNet's ``multi_precision``).

MXNet's ``multi_precision=True`` keeps a float32 copy of each float16 weight,
updates the copy with the gradient cast to float32 and casts the copy back
(``Optimizer.create_state_multi_precision``, ``update_multi_precision``). In JAX
the need is sharper: bfloat16 has 8 significant bits, and a small RMSProp step
(``lr`` below half an ulp of the weight) is lost entirely without a master copy.

Memory per parameter element of ``mxopt.rmsprop``'s state (float32 training
and float16/bfloat16 params, count excluded):

=========================  =========  ===================================
variant                    float32    float16/bfloat16, multi_precision
=========================  =========  ===================================
plain (``n``)              4 bytes    4 (master) + 4 = 8 bytes
centered (``n, g, delta``) 12 bytes   4 (master) + 12 = 16 bytes
=========================  =========  ===================================

Without ``multi_precision`` a float16/bfloat16 param's state is in its own dtype:
2 bytes (plain) or 6 bytes (centered) per element.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mxopt import transforms as T

__all__ = ["master_weights", "MasterWeightsState", "LOW_PRECISION_DTYPES"]

LOW_PRECISION_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


class MasterWeightsState(NamedTuple):
    """State of :func:`master_weights`.

    ``master`` holds a float32 copy of each float16/bfloat16 param and
    ``optax.MaskedNode()`` for every other leaf; ``inner_state`` is the wrapped
    transformation's state, built on the masters.
    """
    master: Any
    inner_state: optax.OptState


def _is_low(x: Any) -> bool:
    return jnp.result_type(x) in LOW_PRECISION_DTYPES


def master_weights(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Run ``inner`` on float32 master copies of float16/bfloat16 params.

    For each float16/bfloat16 leaf: ``init`` stores ``master = param.astype(f32)``
    and builds ``inner``'s state on the masters; ``update`` casts the gradient to
    float32, runs ``inner`` on the master, adds its update to the master in
    float32, and returns the update that takes the param to the new master cast
    to the param's dtype. float32/float64 and integer leaves pass straight to
    ``inner`` and get no extra state.

    Updates of float16/bfloat16 leaves are float32, so ``optax.apply_updates``
    (which adds in float32 and casts back) lands on ``master.astype(dtype)``
    bit for bit whenever the new value is within 2**13 (float16) or 2**16
    (bfloat16) of the old one in magnitude ratio, i.e. unless a weight shrinks
    by more than that in a single step; then it lands within an ulp of the old
    weight's scale, and the master, which is the truth, is unaffected.

    Extra keyword arguments of ``update`` (``optax.GradientTransformationExtraArgs``)
    are passed on to ``inner`` when it takes them.

    Args:
      inner: any optax transformation (e.g. ``mxopt.rmsprop(...)``).
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        master = jax.tree.map(lambda p: p.astype(jnp.float32) if _is_low(p)
                              else optax.MaskedNode(), params)
        inner_params = jax.tree.map(lambda p, m: m if _is_low(p) else p, params, master)
        return MasterWeightsState(master=master, inner_state=inner.init(inner_params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("master_weights needs the params: call "
                             "tx.update(grads, state, params)")
        _, treedef = T._check_grads_match_params(updates, params, "master_weights")
        flat_params = treedef.flatten_up_to(params)
        flat_master = treedef.flatten_up_to(state.master)
        flat_grads = treedef.flatten_up_to(updates)
        low = [_is_low(p) for p in flat_params]
        inner_params = treedef.unflatten(
            [m if is_low else p for is_low, p, m in zip(low, flat_params, flat_master)])
        inner_grads = treedef.unflatten(
            [g.astype(jnp.float32) if is_low else g for is_low, g in zip(low, flat_grads)])
        inner_updates, inner_state = inner.update(inner_grads, state.inner_state, inner_params,
                                                  **extra_args)
        flat_inner = treedef.flatten_up_to(inner_updates)
        new_master, out = [], []
        for is_low, p, m, u in zip(low, flat_params, flat_master, flat_inner):
            if not is_low:
                new_master.append(m)
                out.append(u)
                continue
            master = (m + u).astype(jnp.float32)
            # target - p is exact in float32 for float16/bfloat16 values of
            # similar magnitude, so p + update == target after apply_updates.
            p32 = p.astype(jnp.float32)
            out.append(master.astype(p.dtype).astype(jnp.float32) - p32)
            new_master.append(master)
        return (treedef.unflatten(out),
                MasterWeightsState(master=treedef.unflatten(new_master), inner_state=inner_state))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
