"""Float32 master weights for float16/bfloat16 parameters (MXNet's ``multi_precision``).

MXNet's ``multi_precision=True`` keeps a float32 copy of each float16 weight,
updates the copy with the gradient cast to float32 and casts the copy back
(``Optimizer.create_state_multi_precision``, ``update_multi_precision``). In JAX
the need is sharper: bfloat16 has 8 significant bits, and a small RMSProp step
(``lr`` below half an ulp of the weight) is lost entirely without a master copy.

Memory per parameter element of ``mxopt.rmsprop``'s state (float32 training
and float16/bfloat16 params, count excluded):

==========================  =========  ===================================
variant                     float32    float16/bfloat16, multi_precision
==========================  =========  ===================================
plain (``n``)               4 bytes    4 (master) + 4 = 8 bytes
centered (``n, g, delta``)  12 bytes   4 (master) + 12 = 16 bytes
==========================  =========  ===================================

Without ``multi_precision`` a float16/bfloat16 param's state is in its own dtype:
2 bytes (plain) or 6 bytes (centered) per element.

The updates of float16/bfloat16 leaves are float32 (see :func:`mxopt.master_weights`),
so ``optax.apply_if_finite`` cannot wrap a multi_precision optimizer: use its
``skip_nonfinite=True``.

:func:`mxopt.master_weights` is built in ``mxopt._engine``, with the rest of the
tree machinery every optimizer shares; this module is its public home.
"""
from __future__ import annotations

from mxopt._engine import LOW_PRECISION_DTYPES, MasterWeightsState, master_weights

__all__ = ["master_weights", "MasterWeightsState", "LOW_PRECISION_DTYPES"]
