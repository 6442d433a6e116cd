"""Per-parameter learning-rate and weight-decay multipliers, MXNet's ``lr_mult``/``wd_mult``.

A multiplier specification is resolved against a parameter tree into a tree of
Python floats, one per leaf. It may be:

* a flat dict from leaf name or glob pattern (``fnmatch``: ``*``, ``?``, ``[...]``) to
  a float. A leaf's name is its key path joined with ``/`` (``"Dense_0/kernel"``);
  in a flat dict it is simply the key, so MXNet names such as ``"fc1_weight"``
  work as they are. An exact name wins over patterns; among patterns the first
  (in dict order) that matches wins. Unmatched leaves get 1.0. A name or pattern
  that matches no leaf is an error, so a typo cannot silently train at the
  wrong rate;
* a pytree of floats with the structure of the params (a dict whose values are
  all numbers is read as names and patterns; for a flat params dict both
  readings agree);
* a callable ``(name, leaf) -> float``, e.g. :func:`mxnet_module_wd_mult`.

Multipliers must be finite and >= 0.
"""
from __future__ import annotations

import difflib
import fnmatch
import math
import numbers
from typing import Any, Callable, Mapping, Optional, Union

import jax
import numpy as np

__all__ = [
    "from_nnx",
    "leaf_name",
    "leaf_names",
    "resolve",
    "mxnet_module_wd_mult",
    "no_decay_for_biases_and_norms",
    "unmatched_names_message",
]

MultiplierSpec = Union[None, Mapping[str, float], Callable[[str, Any], float], Any]


def _key_str(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_name(path) -> str:
    """The name of a leaf: its key path joined with ``/``. A final ``.value``
    attribute (how a Flax NNX ``Variable`` holds its array) is left out, so an NNX
    param is named like its module path (``"linear/kernel"``)."""
    keys = list(path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys = keys[:-1]
    return "/".join(_key_str(k) for k in keys)


def leaf_names(tree: Any) -> Any:
    """A tree like ``tree`` whose leaves are their own names."""
    return jax.tree_util.tree_map_with_path(lambda path, _: leaf_name(path), tree)


def _check_value(what: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray,
                                                                    np.generic, jax.Array)):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    if np.ndim(value) != 0:
        raise TypeError(f"{what} must be a scalar, got shape {np.shape(value)}")
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{what} must be a concrete number, not a traced value")
    v = float(np.asarray(value))
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{what} must be finite and >= 0, got {v!r}")
    return v


def resolve(spec: MultiplierSpec, params: Any, argname: str = "lr_mult") -> Optional[Any]:
    """Resolve ``spec`` against ``params`` into a tree of floats (None if spec is None).

    Raises:
      ValueError: a name or pattern matches no leaf; a tree has another
        structure than ``params``; a value is negative or not finite.
      TypeError: a value or the spec itself has the wrong type.
    """
    if spec is None:
        return None
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [leaf_name(p) for p, _ in paths_and_leaves]
    leaves = [leaf for _, leaf in paths_and_leaves]

    is_name_dict = (isinstance(spec, Mapping) and all(isinstance(k, str) for k in spec)
                    and not any(isinstance(v, (Mapping, list, tuple)) for v in spec.values()))
    if is_name_dict:
        values = [1.0] * len(names)
        exact = {n: i for i, n in enumerate(names)}
        used = set()
        for key, value in spec.items():
            _check_value(f"{argname}[{key!r}]", value)
        for i, name in enumerate(names):
            if name in spec:
                values[i] = _check_value(f"{argname}[{name!r}]", spec[name])
                used.add(name)
                continue
            for key, value in spec.items():
                if key not in exact and fnmatch.fnmatchcase(name, key):
                    values[i] = float(np.asarray(value))
                    used.add(key)
                    break
        unmatched = [k for k in spec if k not in used
                     and not any(fnmatch.fnmatchcase(n, k) for n in names)]
        if unmatched:
            raise ValueError(unmatched_names_message(argname, unmatched, names))
        return jax.tree_util.tree_unflatten(treedef, values)

    if callable(spec) and not isinstance(spec, Mapping):
        values = [_check_value(f"{argname}({name!r}, ...)", spec(name, leaf))
                  for name, leaf in zip(names, leaves)]
        return jax.tree_util.tree_unflatten(treedef, values)

    try:
        spec_leaves = treedef.flatten_up_to(spec)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{argname} must be a dict of names/patterns, a callable "
                         f"(name, leaf) -> float, or a tree shaped like the params; "
                         f"got a tree of another structure: {e}") from None
    values = [_check_value(f"{argname} at {name!r}", v) for name, v in zip(names, spec_leaves)]
    return jax.tree_util.tree_unflatten(treedef, values)


def unmatched_names_message(argname: str, unmatched, names) -> str:
    """Names or patterns of ``argname`` that match no parameter, each with the closest
    parameter names, and the parameter names (mxopt's class API warns with it where
    :func:`resolve` raises)."""
    names = list(names)
    hints = []
    for k in unmatched:
        close = difflib.get_close_matches(k, names, n=3)
        hints.append(f"{k!r}" + (f" (did you mean {', '.join(map(repr, close))}?)"
                                 if close else ""))
    return (f"{argname}: no parameter matches {', '.join(hints)}; parameter names are "
            f"{names[:20]}" + (" ..." if len(names) > 20 else ""))


def mxnet_module_wd_mult(name: str, leaf: Any) -> float:
    """MXNet's default weight-decay rule (``Optimizer.set_wd_mult`` when
    ``param_idx2name`` is given, as Module does): parameters whose names do not
    end in ``_weight`` or ``_gamma`` get ``wd_mult`` 0. The name is the last
    ``/`` component of the leaf name."""
    del leaf
    base = name.rsplit("/", 1)[-1]
    return 1.0 if base.endswith("_weight") or base.endswith("_gamma") else 0.0


_NO_DECAY_NAMES = frozenset({"bias", "b", "scale", "offset", "beta", "gamma"})


def no_decay_for_biases_and_norms(name: str, leaf: Any) -> float:
    """The common Flax/Haiku convention: no weight decay for biases and
    normalisation parameters. A leaf gets ``wd_mult`` 0 when it has at most one
    dimension (biases, LayerNorm/BatchNorm scales and offsets) or its last name
    component is one of ``bias``, ``b``, ``scale``, ``offset``, ``beta``,
    ``gamma``; 1 otherwise."""
    base = name.rsplit("/", 1)[-1]
    return 0.0 if np.ndim(leaf) <= 1 or base in _NO_DECAY_NAMES else 1.0


def from_nnx(module_or_state: Any, field: str, wrt: Any = None) -> dict:
    """Per-parameter multipliers kept as Flax NNX variable metadata, the JAX
    counterpart of a Gluon ``Parameter(lr_mult=...)``::

        self.w = nnx.Param(init(...), lr_mult=0.1, wd_mult=0.0)
        tx = mxopt.rmsprop(0.01, wd=1e-4,
                           lr_mult=mxopt.multipliers.from_nnx(model, "lr_mult"),
                           wd_mult=mxopt.multipliers.from_nnx(model, "wd_mult"))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    Args:
      module_or_state: an ``nnx.Module`` or an ``nnx.State``.
      field: the metadata key, e.g. ``"lr_mult"`` or ``"wd_mult"``.
      wrt: the variable filter for a module (default ``nnx.Param``).

    Returns:
      ``{leaf name: multiplier}`` for the variables that carry ``field`` (the
      others get 1.0 when resolved), ready for ``lr_mult=``/``wd_mult=``.
    """
    from flax import nnx  # noqa: PLC0415 (flax is optional)

    if not isinstance(field, str):
        raise TypeError(f"field must be a str, got {type(field).__name__}")
    if isinstance(module_or_state, nnx.State):
        state = module_or_state
    elif isinstance(module_or_state, nnx.Module):
        state = nnx.state(module_or_state, nnx.Param if wrt is None else wrt)
    else:
        raise TypeError(f"from_nnx expects an nnx.Module or nnx.State, got "
                        f"{type(module_or_state).__name__}")
    out = {}
    flat = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    for path, var in flat:
        meta = var.get_metadata() if isinstance(var, nnx.Variable) else {}
        if field in meta:
            name = leaf_name(path)
            out[name] = _check_value(f"{field} of {name!r}", meta[field])
    return out
