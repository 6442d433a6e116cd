"""Checks on user-supplied hyperparameters, shared by every public entry point.

A value that is a JAX tracer (a hyperparameter passed through ``jax.jit`` or
``optax.inject_hyperparams``) is only checked for being a real scalar: its value
is unknown here, and branching on it would break tracing.
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_scalar", "check_learning_rate", "check_bool", "check_begin_num_update",
           "check_base_options",
           "caller_stacklevel",
           "is_traced", "static_value"]


def is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _as_real_scalar(name: str, value: Any):
    """Return ``value`` as a Python float, or None when it is traced."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got the bool {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        dtype = jnp.dtype(value.dtype)
        if np.shape(value) != ():
            raise TypeError(f"{name} must be a scalar, got an array of shape {np.shape(value)}")
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(f"{name} must be a real number, got an array of dtype {dtype}")
        if is_traced(value):
            return None
        return float(np.asarray(value))
    raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")


def check_scalar(name: str, value: Any, *, low: Optional[float] = None,
                 high: Optional[float] = None, low_open: bool = False,
                 high_open: bool = False, allow_none: bool = False) -> None:
    """Raise TypeError/ValueError naming ``name`` unless ``value`` is a finite real
    number inside the stated interval (None allowed when ``allow_none``)."""
    if value is None:
        if allow_none:
            return
        raise TypeError(f"{name} must be a real number, got None")
    v = _as_real_scalar(name, value)
    if v is None:
        return
    interval = (("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}") + ", "
                + ("inf" if high is None else f"{high:g}") + (")" if high_open else "]"))
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, in {interval}; got {v!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be in {interval}, got {v!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be in {interval}, got {v!r}")


def check_learning_rate(value: Any, name: str = "learning_rate") -> None:
    """A learning rate is a finite real number >= 0 or a schedule (a callable of the step)."""
    if callable(value) and not isinstance(value, (jax.Array, np.ndarray)):
        return
    try:
        check_scalar(name, value, low=0.0)
    except TypeError as e:
        raise TypeError(f"{e}; a learning rate is a float or a schedule "
                        f"(a callable of the step count)") from None


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_begin_num_update(value: Any, *, int32: bool = False) -> int:
    """``begin_num_update`` (MXNet's update count to start from) is an int >= 0;
    where mxopt keeps the count in an int32 (the functional optimizers' state)
    it must also leave room for at least one update. Returns it as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"begin_num_update must be an int, got {value!r}")
    value = int(value)
    high = 2**31 - 1 if int32 else 2**63 - 1
    if not 0 <= value < high:
        raise ValueError(f"begin_num_update must be in [0, {'2**31' if int32 else '2**63'} - 1) "
                         f"(the update count is kept in an int{32 if int32 else 64}), got {value}")
    return value


def check_base_options(*, wd: Any, rescale_grad: Any, clip_gradient: Any,
                       begin_num_update: Any, multi_precision: Any,
                       skip_nonfinite: Any) -> None:
    """The options every functional optimizer takes from MXNet's ``Optimizer``
    base class (the learning rate and multipliers are checked where they are
    used)."""
    check_scalar("wd", wd, low=0.0)
    check_scalar("rescale_grad", rescale_grad, low=0.0, low_open=True)
    check_scalar("clip_gradient", clip_gradient, low=0.0, allow_none=True)
    if not (isinstance(begin_num_update, (jax.Array, np.ndarray))
            and jnp.issubdtype(begin_num_update.dtype, jnp.integer)):  # inject_hyperparams'
        check_begin_num_update(begin_num_update, int32=True)
    check_bool("multi_precision", multi_precision)
    check_bool("skip_nonfinite", skip_nonfinite)


def static_value(value: Any) -> Optional[float]:
    """The Python value of a hyperparameter known at trace time, else None."""
    if value is None:
        return None
    if is_traced(value):
        return None
    return float(np.asarray(value))


# Frames of these packages are between a user's call and mxopt's warning (optax's
# chain calls each member's init, jax's tracing calls update).
_LIBRARIES = ("mxopt.", "optax.", "jax.")


def caller_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the first caller outside
    mxopt, optax and jax, so the warning names the user's line (and pytest's
    and ``warnings``' filters see the user's module)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_LIBRARIES):
        frame, level = frame.f_back, level + 1
    return level
