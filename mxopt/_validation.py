"""Checks on user-supplied hyperparameters, shared by every public entry point.

A value that is a JAX tracer (a hyperparameter passed through ``jax.jit`` or
``optax.inject_hyperparams``) is only checked for being a real scalar: its value
is unknown here, and branching on it would break tracing.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_scalar", "check_learning_rate", "check_bool", "is_traced", "static_value"]


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


def static_value(value: Any) -> Optional[float]:
    """The Python value of a hyperparameter known at trace time, else None."""
    if value is None:
        return None
    if is_traced(value):
        return None
    return float(np.asarray(value))
