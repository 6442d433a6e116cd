"""MXNet 1.9.1's learning-rate schedulers (``mxnet.lr_scheduler``) as pure functions.

The classes have MXNet's names, signatures and validation errors::

    FactorScheduler(step, factor=1, stop_factor_lr=1e-8, base_lr=0.01,
                    warmup_steps=0, warmup_begin_lr=0, warmup_mode='linear')
    MultiFactorScheduler(step, factor=1, base_lr=0.01,
                         warmup_steps=0, warmup_begin_lr=0, warmup_mode='linear')
    PolyScheduler(max_update, base_lr=0.01, pwr=2, final_lr=0,
                  warmup_steps=0, warmup_begin_lr=0, warmup_mode='linear')
    CosineScheduler(max_update, base_lr=0.01, final_lr=0,
                    warmup_steps=0, warmup_begin_lr=0, warmup_mode='linear')

MXNet's scheduler objects mutate as they are called (``FactorScheduler`` keeps a
``count`` and multiplies ``base_lr`` in place), so their value depends on the
calls made before. These are pure functions of the update number ``n``: each
returns the value MXNet's object returns when it is called in increasing order
from ``n = 0``, which is how MXNet's optimizer calls it, whatever the order of
the calls here.

Two ways to call one:

* ``sched(n)`` with a Python or NumPy integer returns a Python float equal to
  MXNet's float64 value, bit for bit: the same float64 operations in the same
  order (``FactorScheduler`` multiplies by ``factor`` once per reduction, as
  MXNet does, not ``base_lr * factor ** k``; cosine and power use the C library,
  as Python's ``math.cos`` and ``pow`` do).
* ``sched(count)`` with a JAX or NumPy integer array (traced under ``jax.jit``
  or not, any shape) returns a ``float32`` JAX array equal to what MXNet's
  kernels receive: their ``lr`` parameter is a C++ float, parsed from
  ``str(value)`` by dmlc-core's ``stof``, which is not always the correctly
  rounded float32 (for rates below 1e-4 one value in four differs by an ulp;
  ``mxopt._mxnumbers.kernel_float``). The float64 values are tabulated and
  parsed on the host and the count indexes the table, so no rounding happens
  on the device.
  Negative counts are read as 0. The tables are built (in float64, with the
  same operations) when the call is traced and cached on the object: the
  warmup, then ``max_update + 1`` values for the poly and cosine schedules, the
  distinct rates for the factor schedules. A table longer than 2**24 values
  (64 MiB of float32) raises ``ValueError`` naming the setting at fault; the
  Python-int path has no such limit.

MXNet's optimizer increments its update counter *before* reading the rate: the
rate of the k-th update (k = 1, 2, ...) is ``sched(begin_num_update + k)``.
Optax schedules are called with the number of updates done, from 0. Use
:func:`mxnet_schedule` to get an optax schedule that applies MXNet's rule::

    sched = mxopt.lr_scheduler.FactorScheduler(step=1000, factor=0.5, base_lr=0.1)
    tx = mxopt.rmsprop(learning_rate=mxopt.lr_scheduler.mxnet_schedule(sched))

Mutable ``base_lr``. As in MXNet, ``base_lr`` is a plain attribute and a new
value takes effect on later calls. The rates of a traced call are constants of
the traced function: a function ``jax.jit`` has already compiled keeps the
rates it was traced with, and picks up a new ``base_lr`` only when traced
again. MXNet's ``Optimizer`` sets ``lr_scheduler.base_lr = learning_rate`` when
both are given and differ (``mx.optimizer.RMSProp`` defaults to
``learning_rate=0.001``, so it always does unless told the same rate). Like
MXNet, only the post-warmup values of ``FactorScheduler`` and
``MultiFactorScheduler`` follow ``base_lr``: the warmup ramps to the
``base_lr`` given at construction (``warmup_final_lr``), and ``PolyScheduler``
and ``CosineScheduler`` decay from it (``base_lr_orig``). The other
hyperparameters are read-only.

Validation. Every setting MXNet 1.9.1 rejects is rejected here too, with a
``TypeError`` or ``ValueError`` naming the argument (MXNet uses bare asserts for
some of them). In addition mxopt rejects settings MXNet accepts but that would
silently mis-train or crash later: non-finite or non-real values, bools and
non-integers for integer arguments (MXNet's ``FactorScheduler`` even accepts a
float ``step``), negative learning rates (``base_lr``, ``warmup_begin_lr``,
``final_lr``), a negative ``factor``, a negative ``pwr`` (MXNet divides by zero
at ``max_update``), and ``warmup_steps >= max_update`` for the poly and cosine
schedules (MXNet divides by zero or never decays). It accepts NumPy integers
where MXNet's asserts ask for a Python ``int``.

One MXNet behaviour is not reproduced: a fresh MXNet ``PolyScheduler`` or
``CosineScheduler`` whose *first* call is beyond ``max_update`` (an optimizer
resumed with ``begin_num_update >= max_update``) returns ``base_lr``, because
it never computed a decayed value. Here every ``n >= max_update`` gives the
value at ``max_update`` (``final_lr`` for ``pwr > 0``), which is what MXNet
returns once it has been called at or before ``max_update``.
"""
from __future__ import annotations

import bisect
import contextlib
import contextvars
import itertools
import math
import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from mxopt import _validation as v
from mxopt._mxformat import MXNetObject
from mxopt._mxnumbers import distinct, received_float, received_floats

__all__ = [
    "LRScheduler",
    "FactorScheduler",
    "MultiFactorScheduler",
    "PolyScheduler",
    "CosineScheduler",
    "mxnet_schedule",
    "from_mxnet",
]

# Largest table built for a traced call: 2**24 float32 values (64 MiB).
_MAX_TABLE = 1 << 24
# Largest update number a Python-int call accepts (values are held in int64).
_MAX_NUM_UPDATE = (1 << 63) - 1
_WARMUP_MODES = ("linear", "constant")


# --------------------------------------------------------------------------- validation

def _integer(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if abs(value) > _MAX_NUM_UPDATE:
        raise ValueError(f"{name} must fit in int64, got {value}")
    return value


def _real(name: str, value: Any, *, low: Optional[float] = None,
          high: Optional[float] = None) -> float:
    """``value`` as a Python float, after checking it is a finite host number."""
    if v.is_traced(value):
        raise TypeError(f"{name} must be a concrete number, not a traced JAX value: a "
                        f"scheduler tabulates its learning rates on the host")
    v.check_scalar(name, value, low=low, high=high)
    return float(np.asarray(value))


def _is_python_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _num_update(value: Any, name: str = "num_update") -> int:
    n = _integer(name, value)
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def _integer_array(value: Any, name: str = "num_update") -> jax.Array:
    if not isinstance(value, (jax.Array, np.ndarray)):
        raise TypeError(f"{name} must be an integer or an integer array (the update count), "
                        f"got {type(value).__name__} {value!r}")
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array (the update count), got dtype "
                        f"{value.dtype}")
    return value


# How a traced count's float32 table rounds each rate: as the kernel that reads
# it receives a Python float (rates_parsed_as).
_RATE_PARSE = contextvars.ContextVar("mxopt_rate_parse", default=received_float)


@contextlib.contextmanager
def rates_parsed_as(parse):
    """Within the block, the float32 tables a scheduler builds for traced counts
    round each rate with ``parse`` (a Python float -> float32), instead of as a
    C++ ``float`` field receives it (``dmlc::stof`` of its ``str()``, the
    default). MXNet's ``multi_sgd_*`` kernels read ``lrs`` as ``Tuple<float>``,
    correctly rounded: the engine builds their tables in such a block, so a
    jitted step reads the rate the eager one does."""
    token = _RATE_PARSE.set(parse)
    try:
        yield
    finally:
        _RATE_PARSE.reset(token)


def _float32_table(values64: np.ndarray, scale: float) -> jax.Array:
    # The product is MXNet's float64 `lr *= lr_mult`; the float32 is what the
    # kernel receives from its str() (by default a float field's dmlc::stof, not
    # always the correctly rounded float32; rates_parsed_as).
    parse = _RATE_PARSE.get()
    values = np.asarray(values64 * scale, np.float64)
    if parse is received_float:  # the default: vectorised, each distinct rate once
        return jnp.asarray(received_floats(values))
    unique, inverse = distinct(values)
    parsed = np.array([parse(float(x)) for x in unique], np.float32)
    return jnp.asarray(parsed[inverse].reshape(values.shape))


def _take(table: jax.Array, index: jax.Array) -> jax.Array:
    return jnp.take(table, index, mode="clip")


def _as_work(count: jax.Array) -> jax.Array:
    """``count`` clipped below at 0, as int32 (int64 for a 64-bit count)."""
    work = jnp.int64 if count.dtype.itemsize == 8 else jnp.int32
    high = min(int(np.iinfo(work).max), int(np.iinfo(count.dtype).max))
    return jnp.clip(count, 0, high).astype(work)


# ------------------------------------------------------------ FactorScheduler's sequence

def _factor_run(start: float, factor: float, stop: float, count: int):
    """The ``count`` values after ``start`` of MXNet's reduction loop::

        v = v * factor
        if v < stop: v = stop

    ``np.multiply.accumulate`` multiplies left to right, one rounding per step,
    exactly like the loop. Returns ``(values, settled)``; when ``settled`` the
    sequence is constant from ``values[-1]`` on (or from ``start`` if ``values``
    is empty) and ``values`` stops there.
    """
    values = np.multiply.accumulate(np.concatenate(([start], np.full(count, factor))))[1:]
    # With 0 <= factor <= 1 and start >= 0 the products never increase, so the
    # first value under `stop` is clamped to it and every later one is `stop` too.
    below = np.flatnonzero(values < stop)
    if below.size:
        values = values[:below[0] + 1].copy()
        values[-1] = stop
        return values, True
    same = np.flatnonzero(values == np.concatenate(([start], values[:-1])))
    if same.size:
        return values[:same[0]], True
    return values, False


# --------------------------------------------------------------------------- base class

class LRScheduler:
    """Base class of MXNet's learning-rate schedulers, as a pure function of the
    update number.

    Args:
      base_lr: the learning rate after warmup; finite, >= 0.
      warmup_steps: number of warmup updates before the schedule proper; int >= 0.
      warmup_begin_lr: the learning rate warmup starts from; finite, in
        ``[0, base_lr]``.
      warmup_mode: ``'linear'`` (equal increments from ``warmup_begin_lr`` to
        ``base_lr``) or ``'constant'`` (``warmup_begin_lr`` throughout).

    During warmup (``n < warmup_steps``) the value is::

        linear:   warmup_begin_lr + (warmup_final_lr - warmup_begin_lr) * n / warmup_steps
        constant: warmup_begin_lr

    with ``warmup_final_lr`` the ``base_lr`` given at construction.
    """

    def __init__(self, base_lr=0.01, warmup_steps=0, warmup_begin_lr=0, warmup_mode="linear"):
        base_lr = _real("base_lr", base_lr, low=0.0)
        warmup_steps = _integer("warmup_steps", warmup_steps)
        warmup_begin_lr = _real("warmup_begin_lr", warmup_begin_lr, low=0.0)
        # MXNet's checks, in MXNet's order.
        if warmup_begin_lr > base_lr:
            raise ValueError(f"warmup_begin_lr must not exceed base_lr (MXNet: 'Base lr has to "
                             f"be higher than warmup_begin_lr'); got warmup_begin_lr="
                             f"{warmup_begin_lr!r}, base_lr={base_lr!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not isinstance(warmup_mode, str) or warmup_mode not in _WARMUP_MODES:
            raise ValueError(f"warmup_mode must be 'linear' or 'constant', got {warmup_mode!r}")
        self._memo = {}
        self._base_lr = base_lr
        self._warmup_steps = warmup_steps
        self._warmup_final_lr = base_lr
        self._warmup_begin_lr = warmup_begin_lr
        self._warmup_mode = warmup_mode

    # -- attributes (MXNet's names) --------------------------------------------------

    @property
    def base_lr(self) -> float:
        """The learning rate after warmup. Settable, as in MXNet (whose Optimizer
        sets it to its ``learning_rate``); see the module docstring for which
        schedulers follow it."""
        return self._base_lr

    @base_lr.setter
    def base_lr(self, value):
        self._base_lr = _real("base_lr", value, low=0.0)
        self._memo.clear()

    @property
    def warmup_steps(self) -> int:
        return self._warmup_steps

    @property
    def warmup_begin_lr(self) -> float:
        return self._warmup_begin_lr

    @property
    def warmup_final_lr(self) -> float:
        """``base_lr`` as given at construction: where warmup ends."""
        return self._warmup_final_lr

    @property
    def warmup_mode(self) -> str:
        return self._warmup_mode

    # -- calling ---------------------------------------------------------------------

    def __call__(self, num_update):
        """The learning rate at update number ``num_update``.

        Args:
          num_update: a Python/NumPy integer >= 0, or an integer array (for
            example optax's traced step count).

        Returns:
          For an integer, MXNet's float64 value as a Python float. For an array,
          a float32 JAX array of the same shape holding ``float32`` of MXNet's
          values.
        """
        if _is_python_integer(num_update):
            return self._value(_num_update(num_update), 1.0)
        return self._array_value(_integer_array(num_update), 0, 1.0)

    def get_warmup_lr(self, num_update):
        """The warmup learning rate at ``num_update`` (which must be below
        ``warmup_steps``, as MXNet asserts); an integer gives a Python float, an
        integer array a float32 array (counts clipped into the warmup)."""
        if _is_python_integer(num_update):
            n = _num_update(num_update)
            if n >= self.warmup_steps:
                raise ValueError(f"num_update must be < warmup_steps ({self.warmup_steps}) "
                                 f"for a warmup learning rate, got {n}")
            return self._warmup_value(n)
        n = _integer_array(num_update)
        if self.warmup_steps == 0:
            raise ValueError("get_warmup_lr needs warmup_steps > 0, this scheduler has none")
        table = _float32_table(self._warmup_table64(), 1.0)
        return _take(table, jnp.clip(_as_work(n), 0, self.warmup_steps - 1))

    def _value(self, n: int, scale: float) -> float:
        """MXNet's float64 value at ``n``, times ``scale`` in float64."""
        return self._value64(n) * scale

    def _array_value(self, count: jax.Array, offset: int, scale: float) -> jax.Array:
        """float32(MXNet's value at ``offset + count``, times ``scale`` in float64).

        ``offset`` is a Python int >= 0 and is applied on the host (to the tables
        and thresholds), so no ``offset + count`` is formed on the device and
        nothing overflows the count's dtype.
        """
        return self._lookup(_as_work(count), offset, scale)

    # -- warmup ----------------------------------------------------------------------

    def _warmup_value(self, n: int) -> float:
        """MXNet's get_warmup_lr, operation for operation."""
        if self.warmup_mode == "linear":
            increase = ((self.warmup_final_lr - self.warmup_begin_lr) * float(n)
                        / float(self.warmup_steps))
            return self.warmup_begin_lr + increase
        return self.warmup_begin_lr

    def _warmup64(self, n: np.ndarray) -> np.ndarray:
        """:meth:`_warmup_value` elementwise, with the same float64 operations."""
        if self.warmup_mode == "linear":
            increase = ((self.warmup_final_lr - self.warmup_begin_lr) * n.astype(np.float64)
                        / float(self.warmup_steps))
            return self.warmup_begin_lr + increase
        return np.full(n.shape, self.warmup_begin_lr)

    def _warmup_table64(self) -> np.ndarray:
        if self.warmup_steps > _MAX_TABLE:
            raise ValueError(f"warmup_steps={self.warmup_steps} is too long to tabulate for a "
                             f"traced call (at most {_MAX_TABLE})")
        if "warmup" not in self._memo:
            self._memo["warmup"] = self._warmup64(np.arange(self.warmup_steps, dtype=np.int64))
        return self._memo["warmup"]

    def _with_warmup(self, c: jax.Array, offset: int, after: jax.Array,
                     scale: float) -> jax.Array:
        """``after``, or the warmup rate where ``offset + c < warmup_steps``."""
        remaining = self.warmup_steps - offset
        if remaining <= 0:
            return after
        table = _float32_table(self._warmup_table64()[offset:], scale)
        return jnp.where(c < remaining, _take(table, jnp.clip(c, 0, remaining - 1)), after)

    # -- what subclasses provide -----------------------------------------------------

    def _value64(self, n: int) -> float:
        """MXNet's float64 value at the update number ``n >= 0``."""
        raise NotImplementedError("must override this")

    def _values64(self, n: np.ndarray) -> np.ndarray:
        """:meth:`_value64` at the int64 update numbers ``n``, vectorized with the same
        float64 operations (for the tables of traced calls)."""
        raise NotImplementedError("must override this")

    def _lookup(self, c: jax.Array, offset: int, scale: float) -> jax.Array:
        """float32 of ``scale`` times the value at update ``offset + c``, for an
        integer array ``c >= 0`` and a Python int ``offset >= 0``."""
        raise NotImplementedError("must override this")

    def _warmup_repr(self) -> str:
        return (f"base_lr={self.base_lr!r}, warmup_steps={self.warmup_steps}, "
                f"warmup_begin_lr={self.warmup_begin_lr!r}, warmup_mode={self.warmup_mode!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._warmup_repr()})"

    # -- pickling: by constructor arguments, which unpickling checks again -------------

    def _init_kwargs(self) -> dict:
        return dict(base_lr=self.warmup_final_lr, warmup_steps=self.warmup_steps,
                    warmup_begin_lr=self.warmup_begin_lr, warmup_mode=self.warmup_mode)

    def __getstate__(self):
        if "_init_kwargs" not in type(self).__dict__ and type(self).__init__ is not (
                LRScheduler.__init__):
            # A subclass with its own constructor: pickle its attributes (without the
            # cached tables).
            return {k: val for k, val in self.__dict__.items() if k != "_memo"}
        return {"init": self._init_kwargs(), "base_lr": self.base_lr}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise TypeError(f"a pickled {type(self).__name__} holds a dict, got "
                            f"{type(state).__name__}")
        if "init" not in state:
            self.__dict__.update(state)
            self._memo = {}
            return
        if set(state) != {"init", "base_lr"} or not isinstance(state["init"], dict):
            raise ValueError(f"a pickled {type(self).__name__} holds {{'init': <constructor "
                             f"arguments>, 'base_lr': <float>}}, got the keys {sorted(state)}")
        self.__init__(**state["init"])  # the constructor's checks, again
        self.base_lr = state["base_lr"]


# ---------------------------------------------------------------------- the schedulers

class FactorScheduler(LRScheduler):
    """Reduce the learning rate by ``factor`` every ``step`` updates, down to
    ``stop_factor_lr``.

    After warmup, with :math:`k = \\max(0, \\lfloor (n - 1) / \\mathrm{step}
    \\rfloor)` reductions done by update ``n``::

        v_0 = base_lr
        v_j = max'(v_{j-1} * factor)        # max'(x) = stop_factor_lr if x < stop_factor_lr else x
        lr(n) = v_k

    computed in float64 one multiplication at a time, as MXNet's loop does (not
    ``base_lr * factor ** k``, which rounds differently). The first reduction
    happens at ``n = step + 1``. Note MXNet's clamp: if ``base_lr`` is already
    below ``stop_factor_lr`` the first reduction *raises* the rate to it.

    Args:
      step: updates between reductions; int >= 1.
      factor: the multiplier; finite, in ``[0, 1]``.
      stop_factor_lr: the floor of the reduced rate; finite.
      base_lr, warmup_steps, warmup_begin_lr, warmup_mode: see :class:`LRScheduler`.
    """

    def __init__(self, step, factor=1, stop_factor_lr=1e-8, base_lr=0.01,
                 warmup_steps=0, warmup_begin_lr=0, warmup_mode="linear"):
        super().__init__(base_lr, warmup_steps, warmup_begin_lr, warmup_mode)
        step = _integer("step", step)
        factor = _real("factor", factor)
        if step < 1:
            raise ValueError(f"step must be >= 1 (MXNet: 'Schedule step must be greater or "
                             f"equal than 1 round'), got {step}")
        if factor > 1.0:
            raise ValueError(f"factor must be no more than 1 to make lr reduce, got {factor!r}")
        if factor < 0.0:
            raise ValueError(f"factor must be >= 0, got {factor!r}")
        self._step = step
        self._factor = factor
        self._stop_factor_lr = _real("stop_factor_lr", stop_factor_lr)

    @property
    def step(self) -> int:
        return self._step

    @property
    def factor(self) -> float:
        return self._factor

    @property
    def stop_factor_lr(self) -> float:
        return self._stop_factor_lr

    def _sequence(self, need: int):
        """``(v_0.., settled)``, at least ``min(need, _MAX_TABLE)`` long unless settled."""
        values, settled = self._memo.get("sequence", (np.array([self.base_lr]), False))
        need = min(need, _MAX_TABLE)
        while not settled and len(values) < need:
            # Grow geometrically: most sequences settle after a few dozen values.
            more = min(need, max(2 * len(values), 1024)) - len(values)
            run, settled = _factor_run(values[-1], self.factor, self.stop_factor_lr, more)
            values = np.concatenate((values, run))
        self._memo["sequence"] = (values, settled)
        return values, settled

    def _beyond(self, values: np.ndarray, k: int) -> float:
        """v_k past the stored sequence: keep multiplying, without storing."""
        value, j = values[-1], len(values) - 1
        while j < k:
            run, settled = _factor_run(value, self.factor, self.stop_factor_lr,
                                       min(1 << 20, k - j))
            if k - j <= len(run):
                return run[k - j - 1]
            if settled:
                return run[-1] if len(run) else value
            value, j = run[-1], j + len(run)
        return value

    def _value64(self, n):
        if n < self.warmup_steps:
            return self._warmup_value(n)
        k = max(n - 1, 0) // self.step
        values, settled = self._sequence(k + 1)
        if k < len(values):
            return float(values[k])
        return float(values[-1] if settled else self._beyond(values, k))

    def _values64(self, n):
        out = np.empty(n.shape, np.float64)
        warm = n < self.warmup_steps
        out[warm] = self._warmup64(n[warm])
        k = np.maximum(n[~warm] - 1, 0) // self.step
        if k.size:
            values, settled = self._sequence(int(k.max()) + 1)
            got = values[np.minimum(k, len(values) - 1)]
            if not settled:
                for i in np.flatnonzero(k >= len(values)):
                    got[i] = self._beyond(values, int(k[i]))
            out[~warm] = got
        return out

    def _table(self, reach: int) -> np.ndarray:
        """v_0 .. v_reach, or fewer if the sequence settles before."""
        values, settled = self._sequence(reach + 1)
        if not settled and len(values) <= reach:
            raise ValueError(
                f"FactorScheduler(step={self.step}, factor={self.factor!r}, stop_factor_lr="
                f"{self.stop_factor_lr!r}) keeps reducing the learning rate for more than "
                f"{_MAX_TABLE} reductions within reach of the count; a traced call tabulates "
                f"the distinct rates and supports at most that many: use a smaller factor, a "
                f"larger step or a larger stop_factor_lr")
        return values[:reach + 1]

    def _lookup(self, c, offset, scale):
        # Reductions done by update offset + c: max(0, (offset - 1 + c) // step)
        # = q + (r + c) // step with offset - 1 = q * step + r: q, then one more
        # once c > step - r - 1, and one every step after that.
        q, r = divmod(offset - 1, self.step)
        top = int(np.iinfo(c.dtype).max)
        values = self._table(max(q + (r + top) // self.step, 0))
        last = len(values) - 1
        if q >= last:
            after = jnp.full(c.shape, _RATE_PARSE.get()(float(values[last] * scale)))
        else:
            before = min(self.step - r - 1, top)  # c > top never happens
            more = jnp.where(c > before, 1 + (c - before - 1) // min(self.step, top), 0)
            k = jnp.clip(jnp.minimum(more, last - q) + q, 0, last)
            after = _take(_float32_table(values, scale), k)
        return self._with_warmup(c, offset, after, scale)

    def _init_kwargs(self):
        return dict(step=self.step, factor=self.factor, stop_factor_lr=self.stop_factor_lr,
                    **super()._init_kwargs())

    def __repr__(self):
        return (f"FactorScheduler(step={self.step}, factor={self.factor!r}, stop_factor_lr="
                f"{self.stop_factor_lr!r}, {self._warmup_repr()})")


class MultiFactorScheduler(LRScheduler):
    """Reduce the learning rate by ``factor`` at each update number in ``step``.

    After warmup, with :math:`k = |\\{s \\in \\mathrm{step} : s < n\\}|`::

        lr(n) = base_lr * factor * factor * ... (k times, in float64, left to right)

    so the rate changes at ``n = step[i] + 1``.

    Args:
      step: a list of increasing ints >= 1.
      factor: the multiplier; finite, in ``[0, 1]``.
      base_lr, warmup_steps, warmup_begin_lr, warmup_mode: see :class:`LRScheduler`.
    """

    def __init__(self, step, factor=1, base_lr=0.01, warmup_steps=0, warmup_begin_lr=0,
                 warmup_mode="linear"):
        super().__init__(base_lr, warmup_steps, warmup_begin_lr, warmup_mode)
        if not isinstance(step, list) or len(step) < 1:
            raise TypeError(f"step must be a non-empty list of increasing integers (as MXNet "
                            f"asserts), got {type(step).__name__} {step!r}")
        steps = [_integer(f"step[{i}]", s) for i, s in enumerate(step)]
        for i, s in enumerate(steps):
            if i != 0 and s <= steps[i - 1]:
                raise ValueError(f"step must be an increasing integer list, got {step!r}")
            if s < 1:
                raise ValueError(f"step must hold integers >= 1 (MXNet: 'Schedule step must be "
                                 f"greater or equal than 1 round'), got {step!r}")
        factor = _real("factor", factor)
        if factor > 1.0:
            raise ValueError(f"factor must be no more than 1 to make lr reduce, got {factor!r}")
        if factor < 0.0:
            raise ValueError(f"factor must be >= 0, got {factor!r}")
        self._steps = tuple(steps)
        self._factor = factor

    @property
    def step(self) -> list:
        return list(self._steps)

    @property
    def factor(self) -> float:
        return self._factor

    def _levels(self) -> np.ndarray:
        """``base_lr`` multiplied by ``factor`` 0, 1, ..., len(step) times."""
        if "levels" not in self._memo:
            ones = np.full(len(self._steps), self.factor)
            self._memo["levels"] = np.multiply.accumulate(np.concatenate(([self.base_lr], ones)))
        return self._memo["levels"]

    def _value64(self, n):
        if n < self.warmup_steps:
            return self._warmup_value(n)
        return float(self._levels()[bisect.bisect_left(self._steps, n)])

    def _values64(self, n):
        out = np.empty(n.shape, np.float64)
        warm = n < self.warmup_steps
        out[warm] = self._warmup64(n[warm])
        k = np.searchsorted(np.array(self._steps, np.int64), n[~warm], side="left")
        out[~warm] = self._levels()[k]
        return out

    def _lookup(self, c, offset, scale):
        # A step s is passed when offset + c > s, i.e. c > s - offset: always when
        # s < offset, never when s - offset is beyond the count's dtype.
        top = int(np.iinfo(c.dtype).max)
        passed = sum(1 for s in self._steps if s < offset)
        ahead = [s - offset for s in self._steps if 0 <= s - offset < top]
        k = jnp.full(c.shape, passed, c.dtype)
        if ahead:
            k = k + jnp.sum(c[..., None] > jnp.asarray(ahead, c.dtype), axis=-1, dtype=c.dtype)
        after = _take(_float32_table(self._levels(), scale), k)
        return self._with_warmup(c, offset, after, scale)

    def _init_kwargs(self):
        return dict(step=self.step, factor=self.factor, **super()._init_kwargs())

    def __repr__(self):
        return (f"MultiFactorScheduler(step={self.step}, factor={self.factor!r}, "
                f"{self._warmup_repr()})")


class _DecayToMaxUpdate(LRScheduler):
    """Shared by the poly and cosine schedules: decay over
    ``[warmup_steps, max_update]``, constant after."""

    def __init__(self, max_update, base_lr, final_lr, warmup_steps, warmup_begin_lr,
                 warmup_mode):
        super().__init__(base_lr, warmup_steps, warmup_begin_lr, warmup_mode)
        max_update = _integer("max_update", max_update)
        if max_update < 1:
            raise ValueError(f"max_update (maximum number of updates) must be strictly "
                             f"positive, got {max_update}")
        if self.warmup_steps >= max_update:
            raise ValueError(f"warmup_steps must be less than max_update, got warmup_steps="
                             f"{self.warmup_steps}, max_update={max_update} (MXNet would divide "
                             f"by zero or never decay)")
        self._max_update = max_update
        self._final_lr = _real("final_lr", final_lr, low=0.0)
        self._base_lr_orig = self.base_lr

    @property
    def max_update(self) -> int:
        return self._max_update

    @property
    def final_lr(self) -> float:
        return self._final_lr

    @property
    def base_lr_orig(self) -> float:
        """``base_lr`` as given at construction: where the decay starts."""
        return self._base_lr_orig

    @property
    def max_steps(self) -> int:
        """Length of the decay, ``max_update - warmup_steps``."""
        return self.max_update - self.warmup_steps

    def _decay_value(self, t: int) -> float:
        """The decayed value ``t = n - warmup_steps`` updates into the decay."""
        raise NotImplementedError("must override this")

    def _decay64(self, t: np.ndarray) -> np.ndarray:
        """:meth:`_decay_value` elementwise, with the same float64 operations."""
        raise NotImplementedError("must override this")

    def _value64(self, n):
        if n < self.warmup_steps:
            return self._warmup_value(n)
        return self._decay_value(min(n, self.max_update) - self.warmup_steps)

    def _values64(self, n):
        out = np.empty(n.shape, np.float64)
        warm = n < self.warmup_steps
        out[warm] = self._warmup64(n[warm])
        out[~warm] = self._decay64(np.minimum(n[~warm], self.max_update) - self.warmup_steps)
        return out

    def _lookup(self, c, offset, scale):
        if self.max_update >= _MAX_TABLE:
            raise ValueError(f"max_update={self.max_update} is too long to tabulate for a "
                             f"traced call (at most {_MAX_TABLE - 1})")
        if "table" not in self._memo:
            self._memo["table"] = self._values64(np.arange(self.max_update + 1, dtype=np.int64))
        # Updates 0 .. max_update (warmup included); constant after max_update.
        table = self._memo["table"][min(offset, self.max_update):]
        return _take(_float32_table(table, scale), jnp.clip(c, 0, len(table) - 1))

    def _decay_repr(self) -> str:
        return f"base_lr_orig={self.base_lr_orig!r}, final_lr={self.final_lr!r}"


class PolyScheduler(_DecayToMaxUpdate):
    """Polynomial decay from ``base_lr`` to ``final_lr`` over ``max_update`` updates.

    After warmup, with ``t = min(n, max_update) - warmup_steps`` and
    ``T = max_update - warmup_steps``::

        lr(n) = final_lr + (base_lr - final_lr) * pow(1 - t / T, pwr)

    Args:
      max_update: the update number where the decay reaches ``final_lr``; int >= 1
        and > ``warmup_steps``.
      base_lr: see :class:`LRScheduler`; the decay starts from the value given here.
      pwr: the power; finite, >= 0 (an int or a float, e.g. 0.9).
      final_lr: the final learning rate; finite, >= 0.
      warmup_steps, warmup_begin_lr, warmup_mode: see :class:`LRScheduler`.
    """

    def __init__(self, max_update, base_lr=0.01, pwr=2, final_lr=0,
                 warmup_steps=0, warmup_begin_lr=0, warmup_mode="linear"):
        super().__init__(max_update, base_lr, final_lr, warmup_steps, warmup_begin_lr,
                         warmup_mode)
        self._power = _real("pwr", pwr, low=0.0)

    @property
    def power(self) -> float:
        """``pwr`` (MXNet's attribute name)."""
        return self._power

    def _decay_value(self, t):
        return self.final_lr + (self.base_lr_orig - self.final_lr) * \
            pow(1 - float(t) / float(self.max_steps), self.power)

    def _decay64(self, t):
        base = 1 - t.astype(np.float64) / float(self.max_steps)
        # Python's pow (the C library's), as MXNet calls it; numpy's power differs.
        powered = np.fromiter(map(pow, base.tolist(), itertools.repeat(self.power)),
                              np.float64, count=base.size)
        return self.final_lr + (self.base_lr_orig - self.final_lr) * powered

    def _init_kwargs(self):
        return dict(max_update=self.max_update, pwr=self.power, final_lr=self.final_lr,
                    **super()._init_kwargs())

    def __repr__(self):
        return (f"PolyScheduler(max_update={self.max_update}, pwr={self.power!r}, "
                f"{self._decay_repr()}, {self._warmup_repr()})")


class CosineScheduler(_DecayToMaxUpdate):
    """Cosine decay from ``base_lr`` to ``final_lr`` over ``max_update`` updates.

    After warmup, with ``t = min(n, max_update) - warmup_steps`` and
    ``T = max_update - warmup_steps``::

        lr(n) = final_lr + (base_lr - final_lr) * (1 + cos(pi * t / T)) / 2

    Args:
      max_update: the update number where the decay reaches ``final_lr``; int >= 1
        and > ``warmup_steps``.
      base_lr: see :class:`LRScheduler`; the decay starts from the value given here.
      final_lr: the final learning rate; finite, >= 0.
      warmup_steps, warmup_begin_lr, warmup_mode: see :class:`LRScheduler`.
    """

    def __init__(self, max_update, base_lr=0.01, final_lr=0,
                 warmup_steps=0, warmup_begin_lr=0, warmup_mode="linear"):
        super().__init__(max_update, base_lr, final_lr, warmup_steps, warmup_begin_lr,
                         warmup_mode)

    def _decay_value(self, t):
        return self.final_lr + (self.base_lr_orig - self.final_lr) * \
            (1 + math.cos(math.pi * t / self.max_steps)) / 2

    def _decay64(self, t):
        angle = math.pi * t.astype(np.float64) / self.max_steps
        cosine = np.fromiter(map(math.cos, angle.tolist()), np.float64, count=angle.size)
        return self.final_lr + (self.base_lr_orig - self.final_lr) * (1 + cosine) / 2

    def _init_kwargs(self):
        return dict(max_update=self.max_update, final_lr=self.final_lr,
                    **super()._init_kwargs())

    def __repr__(self):
        return (f"CosineScheduler(max_update={self.max_update}, {self._decay_repr()}, "
                f"{self._warmup_repr()})")


# --------------------------------------------------------------------- MXNet's counting

class _MXNetSchedule:
    """An optax schedule of the 0-based update count ``c`` that returns
    ``lr_mult * scheduler(begin_num_update + c + 1)``."""

    def __init__(self, scheduler, begin_num_update, lr_mult):
        self.scheduler = scheduler
        self.begin_num_update = begin_num_update
        self.lr_mult = lr_mult

    def __call__(self, count):
        offset = self.begin_num_update + 1
        if _is_python_integer(count):
            n = offset + _num_update(count, "count")
            if n > _MAX_NUM_UPDATE:
                raise ValueError(f"begin_num_update + count + 1 must fit in int64, got {n}")
            return self.scheduler._value(n, self.lr_mult)
        count = _integer_array(count, "count")
        if type(self.scheduler).__call__ is not LRScheduler.__call__:
            # A subclass with its own __call__: hand it the update numbers.
            return self.scheduler(count + offset) * self.lr_mult
        return self.scheduler._array_value(count, offset, self.lr_mult)

    def __repr__(self):
        return (f"mxnet_schedule({self.scheduler!r}, begin_num_update={self.begin_num_update}, "
                f"lr_mult={self.lr_mult!r})")


def mxnet_schedule(scheduler: LRScheduler, begin_num_update: int = 0, *,
                   lr_mult: float = 1.0):
    """An optax schedule that reads ``scheduler`` the way MXNet's optimizer does.

    MXNet increments its update counter before it reads the learning rate, so
    the rate of the k-th update (k = 1, 2, ...) of an optimizer created with
    ``begin_num_update`` is ``scheduler(begin_num_update + k)``. Optax calls a
    schedule with the number of updates already done, ``c = k - 1``. The
    returned schedule maps::

        c  ->  lr_mult * scheduler(begin_num_update + c + 1)

    The product is MXNet's float64 ``lr *= lr_mult`` (taken before the cast to
    float32 for an array count, as MXNet's kernel receives it), so a per-parameter
    multiplier can be applied without a second rounding.

    Args:
      scheduler: an :class:`LRScheduler` of this module.
      begin_num_update: MXNet's ``begin_num_update``: updates done before this
        optimizer's first; int >= 0.
      lr_mult: MXNet's per-parameter multiplier; finite, >= 0.

    Returns:
      A callable of the count: a Python float for a Python int, a float32 JAX
      array for an integer array (traced or not).
    """
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler must be an mxopt.lr_scheduler.LRScheduler, got "
                        f"{type(scheduler).__name__} {scheduler!r}")
    begin_num_update = _integer("begin_num_update", begin_num_update)
    if begin_num_update < 0:
        raise ValueError(f"begin_num_update must be >= 0, got {begin_num_update}")
    if begin_num_update >= _MAX_NUM_UPDATE:
        raise ValueError(f"begin_num_update must be < 2**63 - 1, got {begin_num_update}")
    lr_mult = _real("lr_mult", lr_mult, low=0.0)
    return _MXNetSchedule(scheduler, begin_num_update, lr_mult)


# ------------------------------------------------------------------- from MXNet's pickles

def from_mxnet(record: MXNetObject, optimizer_lr: Optional[float] = None) -> LRScheduler:
    """The scheduler of a pickled MXNet scheduler (an :class:`mxopt.interop.MXNetObject`
    read from a ``.states`` file).

    MXNet's schedulers mutate as they run (``base_lr`` decays in place, ``count``
    advances); the constructor arguments are recovered from the fields that do not
    (``warmup_final_lr`` and ``base_lr_orig`` keep the original base rate). When
    the optimizer was built with a ``learning_rate`` (``optimizer_lr``), MXNet
    overwrote the scheduler's ``base_lr`` with it, and so does this function; the
    warmup still ends at the original rate, as in MXNet.
    """
    if not isinstance(record, MXNetObject):
        raise TypeError(f"record must be an MXNetObject, got {type(record).__name__}")
    f = record
    warmup = dict(warmup_steps=f["warmup_steps"], warmup_begin_lr=f["warmup_begin_lr"],
                  warmup_mode=f["warmup_mode"])
    base = f["warmup_final_lr"]
    if record.name == "FactorScheduler":
        sched = FactorScheduler(f["step"], f["factor"], f["stop_factor_lr"], base_lr=base,
                                **warmup)
    elif record.name == "MultiFactorScheduler":
        steps = f["step"]
        sched = MultiFactorScheduler(list(steps) if isinstance(steps, (list, tuple)) else steps,
                                     f["factor"], base_lr=base, **warmup)
    elif record.name == "PolyScheduler":
        sched = PolyScheduler(f["max_update"], base_lr=f["base_lr_orig"], pwr=f["power"],
                              final_lr=f["final_lr"], **warmup)
    elif record.name == "CosineScheduler":
        sched = CosineScheduler(f["max_update"], base_lr=f["base_lr_orig"],
                                final_lr=f["final_lr"], **warmup)
    else:
        raise ValueError(f"unsupported LR scheduler {record.cls}: mxopt.lr_scheduler has "
                         f"Factor, MultiFactor, Poly and Cosine schedulers")
    if optimizer_lr is not None and record.name in ("FactorScheduler", "MultiFactorScheduler"):
        # Optimizer.__init__ set base_lr = learning_rate when they differed.
        sched.base_lr = optimizer_lr
    return sched
