"""Resume MXNet 1.9.1 training runs in JAX, and hand them back, without MXNet.

Reading and writing MXNet's files (pure Python + NumPy; see ``mxopt/_mxformat.py``
for the byte layouts):

* :func:`load_params` / :func:`save_params`: ``.params`` files (``mx.nd.save``,
  Gluon ``save_parameters``, ``HybridBlock.export``) as an ordered
  ``{name: numpy.ndarray}``.
* :func:`load_states` / :func:`save_states`: ``.states`` files (Gluon
  ``Trainer.save_states``, ``Updater.get_states``) as an :class:`MXNetStates`
  record. These files are pickles; they are read with a restricted unpickler that
  rebuilds only MXNet's NDArray, optimizer and LR-scheduler classes, as inert
  records, and refuses anything else (``os.system``, ``eval``, ...) before it runs.

Continuing a Gluon run with :func:`mxopt.rmsprop`::

    params = mxopt.interop.load_params("net.params")          # save_parameters: "0.weight", ...
    ckpt = mxopt.interop.load_states("net.states")             # Trainer.save_states
    # Gluon's Trainer numbers parameters by the sorted *full* names
    # (sorted(net.collect_params().keys())); save_parameters uses *structural*
    # names in collect order. trainer_index_map links the two:
    full = [...]  # net.collect_params().keys(), in collect order (or
                  # export_param_names(load_params("net-0000.params")))
    index_to_leaf = mxopt.interop.trainer_index_map(full, structural_names=list(params))
    trainable = {k: v for k, v in params.items() if "running_" not in k}
    resumed = mxopt.interop.resume_rmsprop(ckpt, trainable, index_to_leaf)
    tx = mxopt.rmsprop(**resumed.kwargs)
    params, state = resumed.params, resumed.state
    # ... updates, state = tx.update(grads, state, params) as usual.

and back to MXNet: ``save_states(path, rmsprop_state_to_mxnet(state, params,
index_to_leaf, ckpt.optimizer))`` writes a file ``Trainer.load_states`` accepts.

Leaves of a param tree are named by their key path joined with ``/`` (``{"a":
{"b": x}}`` has the leaf ``"a/b"``; a flat dict's leaves are its keys): see
:func:`leaf_names`.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from mxopt import _mxformat as _fmt
from mxopt import lr_scheduler, multipliers
from mxopt._mxformat import (
    MXNetFormatError,
    MXNetObject,
    MXNetStates,
    UnsafePickleError,
    dumps_params,
    dumps_states,
    loads_params,
    loads_states,
    restricted_loads,
)
from mxopt.alias import CenteredRMSPropState, RMSPropState

__all__ = [
    "MXNetFormatError", "UnsafePickleError", "MXNetObject", "MXNetStates",
    "load_params", "loads_params", "save_params", "dumps_params",
    "split_export", "export_param_names",
    "load_states", "loads_states", "save_states", "dumps_states", "restricted_loads",
    "trainer_index_map", "leaf_names",
    "rmsprop_kwargs", "rmsprop_state_from_mxnet", "resume_rmsprop", "ResumedRMSProp",
    "RMSPropFromMXNet", "rmsprop_state_to_mxnet", "rmsprop_optimizer",
    "lr_scheduler_from_mxnet",
]

PathLike = Union[str, os.PathLike]
Index = Union[int, str]
_INT32_MAX = 2 ** 31 - 1


def _read(path: PathLike, what: str) -> Tuple[bytes, str]:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}; "
                        f"for bytes use the loads_* functions")
    path = os.fspath(path)
    with open(path, "rb") as f:
        return f.read(), path


# --------------------------------------------------------------------------------------
# .params files
# --------------------------------------------------------------------------------------

def load_params(path: PathLike) -> dict:
    """Read an MXNet ``.params`` file (``mx.nd.save``, Gluon ``save_parameters``,
    ``HybridBlock.export``) into an ordered ``{name: numpy.ndarray}``.

    A file saved from a list has the keys ``"0"``, ``"1"``, ... Dense arrays of
    float16/32/64, uint8, int8, int32, int64 and bool are read, including 0-d and
    zero-size arrays of files written with numpy-shape semantics. Sparse arrays,
    unknown format versions, truncated or corrupt files raise
    :class:`MXNetFormatError` (a ``ValueError``) naming the file and the problem.
    """
    data, source = _read(path, "path")
    return loads_params(data, source)


def save_params(path: PathLike, arrays: Union[Mapping[str, Any], Sequence[Any]], *,
                np_shape: bool = False) -> None:
    """Write ``{name: array}`` (or a list of arrays) as ``mx.nd.save`` does, byte for
    byte, so ``mx.nd.load`` (or Gluon ``load_parameters`` with structural names)
    reads it. JAX and NumPy arrays are accepted; see :func:`dumps_params` for
    ``np_shape``. The file is replaced atomically."""
    data = dumps_params(arrays, np_shape=np_shape)
    _fmt.atomic_write(path, data)


def split_export(arrays: Mapping[str, Any]) -> Tuple[dict, dict]:
    """Split an ``export`` file's ``{"arg:name": ..., "aux:name": ...}`` into
    ``(arg_params, aux_params)`` keyed by the full parameter names (like MXNet's
    ``load_checkpoint``)."""
    args, auxs = {}, {}
    for key, value in arrays.items():
        kind, sep, name = key.partition(":")
        if not sep or kind not in ("arg", "aux"):
            raise ValueError(f"{key!r} is not an export key ('arg:<name>' or 'aux:<name>')")
        (args if kind == "arg" else auxs)[name] = value
    return args, auxs


def export_param_names(arrays: Mapping[str, Any]) -> list:
    """The full parameter names of an ``export`` file (``-0000.params``), in the
    file's order, which is Gluon's collect order (``net.collect_params().keys()``)."""
    names = []
    for key in arrays:
        kind, sep, name = key.partition(":")
        if not sep or kind not in ("arg", "aux"):
            raise ValueError(f"{key!r} is not an export key ('arg:<name>' or 'aux:<name>')")
        names.append(name)
    return names


# --------------------------------------------------------------------------------------
# .states files
# --------------------------------------------------------------------------------------

def load_states(path: PathLike) -> MXNetStates:
    """Read a ``.states`` file (Gluon ``Trainer.save_states``, or
    ``Updater.get_states(dump_optimizer=...)`` written to disk) without MXNet and
    without running any code it might carry (see :func:`restricted_loads`)."""
    data, source = _read(path, "path")
    return loads_states(data, source)


def save_states(path: PathLike, states: MXNetStates) -> None:
    """Write ``states`` as a ``.states`` file MXNet 1.9.1 loads with
    ``Trainer.load_states`` / ``Updater.set_states``; replaced atomically."""
    _fmt.atomic_write(path, dumps_states(states))


# --------------------------------------------------------------------------------------
# Naming: MXNet indices and leaves of a param tree
# --------------------------------------------------------------------------------------

def trainer_index_map(full_names: Iterable[str],
                      structural_names: Optional[Iterable[str]] = None) -> dict:
    """Gluon ``Trainer``'s parameter numbering: ``{index: name}``.

    ``Trainer(net.collect_params(), ...)`` numbers parameters by their position in
    ``sorted(net.collect_params().keys())``, the sorted *full* names (e.g.
    ``dense0_weight``), and the ``.states`` file is keyed by that number.

    Args:
      full_names: the full names, e.g. ``list(net.collect_params().keys())``, or
        ``export_param_names(load_params("net-0000.params"))``. Every parameter
        the Trainer was given, trainable or not (``running_mean`` ... count).
      structural_names: optional, the ``save_parameters`` names (``0.weight``, ...)
        in the same collect order as ``full_names`` (``list(load_params(
        "net.params"))`` is in that order). When given, the map's values are these
        names, which is what ``load_params`` keys the weights by.

    If you built the Trainer from a list of parameters instead, its index is the
    position in that list: use ``dict(enumerate(names))``.
    """
    full = _str_list("full_names", full_names)
    if structural_names is None:
        target = dict(zip(full, full))
    else:
        structural = _str_list("structural_names", structural_names)
        if len(structural) != len(full):
            raise ValueError(f"structural_names has {len(structural)} names but full_names "
                             f"has {len(full)}; both must list every parameter in collect order")
        target = dict(zip(full, structural))
    return {i: target[name] for i, name in enumerate(sorted(full))}


def _str_list(what, names):
    if isinstance(names, (str, bytes)):
        raise TypeError(f"{what} must be an iterable of names, not a single string")
    out = list(names)
    for n in out:
        if not isinstance(n, str):
            raise TypeError(f"{what} must hold str names, got {type(n).__name__} {n!r}")
    seen = set()
    for n in out:
        if n in seen:
            raise ValueError(f"{what} names {n!r} twice")
        seen.add(n)
    return out


def _named_leaves(tree, what: str):
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [multipliers.leaf_name(path) for path, _ in flat]
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"two leaves of {what} are both named {n!r}; leaf names join "
                             f"the key path with '/'")
        seen.add(n)
    return names, [leaf for _, leaf in flat], treedef


def leaf_names(tree) -> list:
    """The names :mod:`mxopt.interop` gives the leaves of ``tree``, in flatten order:
    :func:`mxopt.multipliers.leaf_name`, each leaf's key path joined with ``/``
    (``{"fc": {"weight": w}}`` -> ``"fc/weight"``;
    a flat ``{"0.weight": w}`` -> ``"0.weight"``)."""
    return _named_leaves(tree, "the tree")[0]


def _check_index_map(index_to_leaf) -> dict:
    if not isinstance(index_to_leaf, Mapping):
        raise TypeError(f"index_to_leaf must be a mapping of MXNet index -> leaf name, got "
                        f"{type(index_to_leaf).__name__}")
    inverse = {}
    for idx, name in index_to_leaf.items():
        if isinstance(idx, bool) or not isinstance(idx, (int, str)):
            raise TypeError(f"index_to_leaf keys must be MXNet indices (int or str), got {idx!r}")
        if not isinstance(name, str):
            raise TypeError(f"index_to_leaf[{idx!r}] must be a leaf name (str), got {name!r}")
        if name in inverse:
            raise ValueError(f"index_to_leaf maps both {inverse[name]!r} and {idx!r} to the "
                             f"leaf {name!r}")
        inverse[name] = idx
    return inverse


def _sort_indices(indices):
    return sorted(indices, key=lambda i: (isinstance(i, str), i))


# --------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------

def _multiplier(optimizer, index, field, overrides):
    """``Optimizer._get_lrs`` / ``_get_wds``: a Gluon parameter's own multiplier
    (``param_dict``, which MXNet does not save: pass it as ``overrides``), else the
    optimizer's ``lr_mult``/``wd_mult`` by index, else by ``idx2name`` name."""
    if overrides is not None and index in overrides:
        return _fmt.real_field(optimizer, f"{field} override for index {index!r}",
                               overrides[index])
    table = optimizer.get(field) or {}
    idx2name = optimizer.get("idx2name") or {}
    if index in table:
        return _fmt.real_field(optimizer, f"{field}[{index!r}]", table[index])
    if index in idx2name:
        return _fmt.real_field(optimizer, f"{field}[{idx2name[index]!r}]",
                     table.get(idx2name[index], 1.0))
    return 1.0


def rmsprop_kwargs(optimizer: MXNetObject, indices: Iterable[Index], *,
                   learning_rate: Any = None,
                   param_lr_mult: Optional[Mapping[Index, float]] = None,
                   param_wd_mult: Optional[Mapping[Index, float]] = None) -> dict:
    """Keyword arguments of the :func:`mxopt.rmsprop` that continues ``optimizer``
    (an MXNet RMSProp record) on the parameters ``indices``.

    The effective learning rate and weight decay of a parameter are MXNet's:
    ``lr * lr_mult`` and ``wd * wd_mult``, the multipliers looked up as
    ``Optimizer._get_lrs`` does. Gluon keeps a parameter's own ``lr_mult`` /
    ``wd_mult`` on the Parameter, which ``save_states`` does not save: pass them as
    ``param_lr_mult={index: mult}`` / ``param_wd_mult``. One :func:`mxopt.rmsprop`
    has one learning rate and one ``wd``, so all ``indices`` must share their
    multipliers; otherwise a ValueError lists them: convert each group separately
    and combine the groups with ``optax.multi_transform``.

    ``rescale_grad`` is the optimizer's as saved; Gluon's ``Trainer.step(batch_size)``
    sets it to ``rescale_grad / batch_size`` every step, so this is right for the
    batch size of the last step before the checkpoint.

    Args:
      optimizer: an ``mxnet.optimizer.optimizer.RMSProp`` :class:`MXNetObject`.
      indices: the MXNet parameter indices the transformation will update.
      learning_rate: overrides the optimizer's. By default a saved
        ``lr_scheduler`` is rebuilt as an :mod:`mxopt.lr_scheduler` scheduler
        (:func:`lr_scheduler_from_mxnet`), which :func:`mxopt.rmsprop` reads with
        MXNet's counting.
      param_lr_mult, param_wd_mult: Gluon parameters' own multipliers by index.

    Returns:
      ``dict(learning_rate=..., gamma1=..., gamma2=..., epsilon=..., centered=...,
      clip_weights=..., wd=..., rescale_grad=..., clip_gradient=...)``.
    """
    _fmt.check_rmsprop(optimizer)
    indices = list(indices)
    if not indices:
        raise ValueError("indices is empty: name the MXNet indices of the parameters to update")
    for name, table in (("param_lr_mult", param_lr_mult), ("param_wd_mult", param_wd_mult)):
        if table is not None and not isinstance(table, Mapping):
            raise TypeError(f"{name} must be a mapping of MXNet index -> multiplier, got "
                            f"{type(table).__name__}")
    mults = {i: (_multiplier(optimizer, i, "lr_mult", param_lr_mult),
                 _multiplier(optimizer, i, "wd_mult", param_wd_mult)) for i in indices}
    distinct = sorted(set(mults.values()))
    if len(distinct) > 1:
        groups = {m: [i for i in indices if mults[i] == m] for m in distinct}
        listing = "; ".join(f"lr_mult {lm:g}, wd_mult {wm:g}: indices {ids}"
                            for (lm, wm), ids in groups.items())
        raise ValueError(f"the parameters have different learning-rate or weight-decay "
                         f"multipliers ({listing}); one mxopt.rmsprop applies one learning rate "
                         f"and one wd: call rmsprop_kwargs for each group and combine them with "
                         f"optax.multi_transform")
    lr_mult, wd_mult = distinct[0]
    if learning_rate is None:
        if optimizer.get("lr_scheduler") is not None:
            # The state's count is MXNet's num_update; mxnet_schedule reads the
            # scheduler at count + 1 and applies lr_mult in float64, as MXNet.
            scheduler = lr_scheduler_from_mxnet(optimizer["lr_scheduler"], optimizer.get("lr"))
            learning_rate = (scheduler if lr_mult == 1.0 else
                             lr_scheduler.mxnet_schedule(scheduler, lr_mult=lr_mult))
            lr_mult = 1.0
        else:
            learning_rate = _fmt.real_field(optimizer, "lr")
    if lr_mult != 1.0:
        if callable(learning_rate):
            schedule = learning_rate
            learning_rate = lambda count: schedule(count) * lr_mult  # noqa: E731
        else:
            learning_rate = learning_rate * lr_mult
    return dict(
        learning_rate=learning_rate,
        gamma1=_fmt.real_field(optimizer, "gamma1"),
        gamma2=_fmt.real_field(optimizer, "gamma2"),
        epsilon=_fmt.real_field(optimizer, "epsilon"),
        centered=bool(optimizer.get("centered")),
        clip_weights=_fmt.clip_bound(optimizer, "clip_weights"),
        wd=_fmt.real_field(optimizer, "wd") * wd_mult,
        rescale_grad=_fmt.real_field(optimizer, "rescale_grad"),
        clip_gradient=_fmt.clip_bound(optimizer, "clip_gradient"),
    )


def rmsprop_optimizer(*, learning_rate: float = 0.001, gamma1: float = 0.9, gamma2: float = 0.9,
                      epsilon: float = 1e-8, centered: bool = False,
                      clip_weights: Optional[float] = None, wd: float = 0.0,
                      rescale_grad: float = 1.0, clip_gradient: Optional[float] = None,
                      multi_precision: bool = False,
                      lr_scheduler: Optional[MXNetObject] = None,
                      begin_num_update: int = 0) -> MXNetObject:
    """A fresh ``mx.optimizer.RMSProp`` as an :class:`MXNetObject`, with exactly the
    fields MXNet 1.9.1's constructor sets (checked against MXNet by the golden
    script), to export a run that started in mxopt: takes :func:`mxopt.rmsprop`'s
    keyword arguments (``learning_rate`` must be a number; an optax schedule has no
    MXNet equivalent, pass an MXNet ``lr_scheduler`` record instead).
    :func:`rmsprop_state_to_mxnet` fills in the update counts."""
    if callable(learning_rate):
        raise TypeError("learning_rate must be a number to export: an optax schedule has no "
                        "MXNet equivalent (pass lr_scheduler=<an MXNet scheduler record>)")
    return _fmt.rmsprop_optimizer(
        learning_rate=_as_float("learning_rate", learning_rate), gamma1=_as_float("gamma1", gamma1),
        gamma2=_as_float("gamma2", gamma2), epsilon=_as_float("epsilon", epsilon),
        centered=bool(centered), clip_weights=_as_float("clip_weights", clip_weights, True),
        wd=_as_float("wd", wd), rescale_grad=_as_float("rescale_grad", rescale_grad),
        clip_gradient=_as_float("clip_gradient", clip_gradient, True),
        multi_precision=bool(multi_precision), lr_scheduler=lr_scheduler,
        begin_num_update=int(begin_num_update))


def _as_float(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.shape(value) == ():
        value = np.asarray(value).item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------
# State: MXNet -> mxopt
# --------------------------------------------------------------------------------------

class RMSPropFromMXNet(NamedTuple):
    """What :func:`rmsprop_state_from_mxnet` returns.

    ``state`` is the :func:`mxopt.rmsprop` state. ``params`` is the tree to update:
    the given params, except that each ``multi_precision`` float16 leaf is replaced
    by MXNet's float32 master copy of it (MXNet updates the master copy with the
    gradient cast to float32 and uses ``master.astype(float16)`` as the weight;
    do the same). ``master_leaves`` names those leaves.
    """
    state: Union[RMSPropState, CenteredRMSPropState]
    params: Any
    master_leaves: Tuple[str, ...]


class ResumedRMSProp(NamedTuple):
    """What :func:`resume_rmsprop` returns: ``mxopt.rmsprop(**kwargs)`` continues the
    run from ``state`` on ``params`` (see :class:`RMSPropFromMXNet`)."""
    kwargs: dict
    state: Union[RMSPropState, CenteredRMSPropState]
    params: Any
    master_leaves: Tuple[str, ...]


_STATE_NAMES = {1: ("n",), 3: ("n", "g_avg", "delta")}


def _split_entry(entry, label):
    """An RMSProp state entry as MXNet keeps it -> (master or None, arrays)."""
    master = None
    if (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], np.ndarray)
            and isinstance(entry[1], tuple)):
        master, entry = entry  # create_state_multi_precision: (float32 copy, state)
    if isinstance(entry, np.ndarray):
        entry = (entry,)
    if (not isinstance(entry, tuple) or len(entry) not in _STATE_NAMES
            or not all(isinstance(a, np.ndarray) for a in entry)):
        raise ValueError(f"{label}: not an RMSProp state: expected (n,) or (n, g, delta) "
                         f"arrays, optionally after a float32 master weight, got "
                         f"{_describe_entry(entry)}")
    return master, entry


def _describe_entry(entry):
    if isinstance(entry, np.ndarray):
        return f"an array of shape {entry.shape}"
    if isinstance(entry, tuple):
        return "(" + ", ".join(_describe_entry(e) for e in entry) + ")"
    return type(entry).__name__


def _counts_check(optimizer, indices):
    """mxopt's count for an MXNet optimizer: its ``num_update``."""
    num_update = optimizer.get("num_update")
    if isinstance(num_update, (bool, np.bool_)) or not isinstance(num_update, (int, np.integer)):
        raise ValueError(f"the optimizer's num_update is {num_update!r}, not an integer")
    num_update = int(num_update)
    per_index = optimizer.get("_index_update_count") or {}
    begin = optimizer.get("begin_num_update", 0)
    counts = {i: int(per_index.get(i, begin)) for i in indices}
    if optimizer.get("lr_scheduler") is not None and any(c != num_update for c in counts.values()):
        raise ValueError(
            f"the parameters' update counts {counts} differ from num_update {num_update}: with "
            f"an LR scheduler MXNet then gives some parameters the previous step's learning rate "
            f"(num_update advances only when the most-updated parameter is updated), which one "
            f"mxopt count cannot represent; pass count=... to choose one deliberately")
    return num_update


def rmsprop_state_from_mxnet(states: MXNetStates, params, index_to_leaf: Mapping[Index, str], *,
                             count: Optional[int] = None,
                             allow_unused: bool = False) -> RMSPropFromMXNet:
    """MXNet RMSProp optimizer states -> :func:`mxopt.rmsprop` state for ``params``.

    Args:
      states: a loaded ``.states`` file (:func:`load_states`).
      params: the tree mxopt will update (e.g. the trainable part of
        :func:`load_params`' dict). Every leaf needs an MXNet index and a state.
      index_to_leaf: ``{mxnet_index: leaf name}`` (:func:`trainer_index_map` builds
        it for Gluon; names are :func:`leaf_names`). Indices without a state in the
        file (non-trainable parameters) may map to leaves not in ``params``.
      count: the state's update count. By default the optimizer's ``num_update``
        (the number of steps MXNet counted, plus ``begin_num_update``), which is
        what drives its LR scheduler; required when the file has no optimizer
        (``dump_optimizer=False``). With a scheduler the parameters' own counts
        must all equal ``num_update`` (else MXNet's schedule is per parameter and a
        ValueError explains); without one the counts do not affect RMSProp.
      allow_unused: accept states in the file that no leaf of ``params`` receives
        (else a ValueError lists them, so that nothing is dropped by accident).

    Shapes must match the leaves. Dtypes must match too, except for MXNet's
    ``multi_precision`` float16 parameters, whose state holds a float32 master copy
    and float32 statistics: the result then updates the master copy (see
    :class:`RMSPropFromMXNet`).
    """
    if not isinstance(states, MXNetStates):
        raise TypeError(f"states must be an MXNetStates (load_states(...)), got "
                        f"{type(states).__name__}")
    optimizer = states.optimizer
    if optimizer is not None:
        _fmt.check_rmsprop(optimizer, "the file's optimizer")
    if not isinstance(allow_unused, bool):
        raise TypeError(f"allow_unused must be a bool, got {allow_unused!r}")
    inverse = _check_index_map(index_to_leaf)
    names, leaves, treedef = _named_leaves(params, "params")
    if not leaves:
        raise ValueError("params has no leaves")

    masters, stats, master_leaves, used = [], [], [], []
    centered = None
    for name, leaf in zip(names, leaves):
        if name not in inverse:
            raise ValueError(f"leaf {name!r} has no MXNet index in index_to_leaf (leaf names "
                             f"join the key path with '/'; see leaf_names)")
        idx = inverse[name]
        label = f"leaf {name!r} (MXNet index {idx!r})"
        if idx not in states.states:
            raise ValueError(f"{label} has no optimizer state in the file: MXNet creates it at "
                             f"the parameter's first update; was the parameter trained?")
        used.append(idx)
        master, arrays = _split_entry(states.states[idx], label)
        this_centered = len(arrays) == 3
        if centered is None:
            centered = this_centered
        elif centered != this_centered:
            raise ValueError(f"{label} has {len(arrays)} state arrays but earlier leaves have "
                             f"{3 if centered else 1}: plain and centered RMSProp mixed")
        shape = tuple(np.shape(leaf))
        dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)
        want_dtype = dtype
        if master is not None:
            if dtype != np.float16 or master.dtype != np.float32:
                raise ValueError(f"{label}: a multi_precision state (a {master.dtype} master "
                                 f"copy) belongs to a float16 weight, but the leaf is {dtype}")
            if master.shape != shape:
                raise ValueError(f"{label}: the master copy has shape {master.shape}, the leaf "
                                 f"{shape}")
            want_dtype = np.dtype(np.float32)
            master_leaves.append(name)
        for state_name, arr in zip(_STATE_NAMES[len(arrays)], arrays):
            if arr.shape != shape:
                raise ValueError(f"{label}: state {state_name} has shape {arr.shape} but the "
                                 f"leaf has shape {shape}")
            if arr.dtype != want_dtype:
                raise ValueError(f"{label}: state {state_name} is {arr.dtype} but the leaf is "
                                 f"{want_dtype}" + (" (its master copy)" if master is not None
                                                    else ""))
        masters.append(master)
        stats.append(arrays)

    if optimizer is not None and optimizer.get("centered") is not None \
            and bool(optimizer.get("centered")) != centered:
        raise ValueError(f"the optimizer says centered={bool(optimizer['centered'])} but its "
                         f"states have {3 if centered else 1} arrays per parameter")
    if optimizer is not None and master_leaves and not optimizer.get("multi_precision"):
        raise ValueError(f"leaves {master_leaves} have master copies but the optimizer's "
                         f"multi_precision is off")
    used_set = set(used)
    unused = [i for i in states.states if i not in used_set]
    if unused and not allow_unused:
        described = ", ".join(f"{i!r}" + (f" ({index_to_leaf[i]!r})" if i in index_to_leaf else "")
                              for i in _sort_indices(unused))
        raise ValueError(f"the file holds states for MXNet indices {described} that no leaf of "
                         f"params receives; add those leaves, or pass allow_unused=True to drop "
                         f"them")

    if count is None:
        if optimizer is None:
            raise ValueError("the file has no optimizer (saved with dump_optimizer=False): pass "
                             "count=<number of updates done>")
        count = _counts_check(optimizer, used)
    if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an int, got {count!r}")
    if not 0 <= int(count) <= _INT32_MAX:
        raise ValueError(f"count must be in [0, {_INT32_MAX}], got {count}")

    def as_tree(arrays):
        return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in arrays])

    count = jnp.asarray(int(count), jnp.int32)
    n = as_tree([a[0] for a in stats])
    if centered:
        state = CenteredRMSPropState(count=count, n=n, g_avg=as_tree([a[1] for a in stats]),
                                     delta=as_tree([a[2] for a in stats]))
    else:
        state = RMSPropState(count=count, n=n)
    new_params = jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(m) if m is not None else leaf for m, leaf in zip(masters, leaves)])
    return RMSPropFromMXNet(state, new_params, tuple(master_leaves))


def resume_rmsprop(states: MXNetStates, params, index_to_leaf: Mapping[Index, str], *,
                   learning_rate: Any = None,
                   param_lr_mult: Optional[Mapping[Index, float]] = None,
                   param_wd_mult: Optional[Mapping[Index, float]] = None,
                   count: Optional[int] = None, allow_unused: bool = False) -> ResumedRMSProp:
    """:func:`rmsprop_state_from_mxnet` and :func:`rmsprop_kwargs` in one call: the
    arguments of :func:`mxopt.rmsprop` and the state and params to continue from.
    Needs the optimizer in the file (``Trainer.save_states`` always saves it)."""
    if not isinstance(states, MXNetStates):
        raise TypeError(f"states must be an MXNetStates (load_states(...)), got "
                        f"{type(states).__name__}")
    if states.optimizer is None:
        raise ValueError("the file has no optimizer (saved with dump_optimizer=False), so its "
                         "hyperparameters are unknown: use rmsprop_state_from_mxnet(..., "
                         "count=...) and choose the mxopt.rmsprop arguments yourself")
    converted = rmsprop_state_from_mxnet(states, params, index_to_leaf, count=count,
                                         allow_unused=allow_unused)
    inverse = _check_index_map(index_to_leaf)
    indices = [inverse[name] for name in leaf_names(params)]
    kwargs = rmsprop_kwargs(states.optimizer, indices, learning_rate=learning_rate,
                            param_lr_mult=param_lr_mult, param_wd_mult=param_wd_mult)
    return ResumedRMSProp(kwargs, converted.state, converted.params, converted.master_leaves)


# --------------------------------------------------------------------------------------
# State: mxopt -> MXNet
# --------------------------------------------------------------------------------------

def rmsprop_state_to_mxnet(state: Union[RMSPropState, CenteredRMSPropState], params,
                           index_to_leaf: Mapping[Index, str],
                           optimizer: Optional[MXNetObject] = None, *,
                           master_leaves: Iterable[str] = ()) -> MXNetStates:
    """:func:`mxopt.rmsprop` state -> an :class:`MXNetStates` that :func:`save_states`
    writes for MXNet's ``Trainer.load_states`` / ``Updater.set_states``.

    Args:
      state: the mxopt state; ``params``: the tree it updates (for
        ``master_leaves``, the float32 master copies).
      index_to_leaf: ``{mxnet_index: leaf name}``, as for the other direction.
      optimizer: the MXNet optimizer record to save with the states: the one read
        from the checkpoint (its scheduler, multipliers and names are kept), or
        :func:`rmsprop_optimizer` for a run that started in mxopt. Its update
        counts are set from ``state.count`` (``num_update`` and every exported
        index's count, on device 0). None writes the states alone
        (``dump_optimizer=False``): MXNet then keeps its own optimizer and counts.
      master_leaves: leaves that MXNet holds as float16 weights with a float32
        master copy (``multi_precision=True``); :func:`rmsprop_state_from_mxnet`
        returns them.

    ``Trainer.load_states`` replaces the Trainer's optimizer by the saved one, so
    the saved hyperparameters are the ones MXNet continues with (Gluon's
    ``step(batch_size)`` still sets ``rescale_grad`` from the Trainer's own).
    """
    if not isinstance(state, (RMSPropState, CenteredRMSPropState)):
        raise TypeError(f"state must be an mxopt.rmsprop state (RMSPropState or "
                        f"CenteredRMSPropState), got {type(state).__name__}")
    centered = isinstance(state, CenteredRMSPropState)
    if optimizer is not None:
        _fmt.check_rmsprop(optimizer)
        if bool(optimizer.get("centered")) != centered:
            raise ValueError(f"the optimizer says centered={bool(optimizer.get('centered'))} "
                             f"but the state is a {type(state).__name__}")
    inverse = _check_index_map(index_to_leaf)
    names, leaves, treedef = _named_leaves(params, "params")
    if isinstance(master_leaves, str):
        raise TypeError("master_leaves must be an iterable of leaf names, not a single string")
    master_leaves = set(master_leaves)
    unknown = master_leaves - set(names)
    if unknown:
        raise ValueError(f"master_leaves names {sorted(unknown)}, which are not leaves of params")
    if master_leaves and (optimizer is None or not optimizer.get("multi_precision")):
        raise ValueError("master_leaves need an optimizer with multi_precision=True (MXNet "
                         "keeps master copies only then)")
    fields = ("n", "g_avg", "delta") if centered else ("n",)
    trees = []
    for field in fields:
        tree = getattr(state, field)
        try:
            flat = treedef.flatten_up_to(tree)
        except (ValueError, TypeError) as e:
            raise ValueError(f"state.{field} does not have the structure of params: {e}") from None
        trees.append(flat)

    count = np.asarray(state.count)
    if count.shape != () or not np.issubdtype(count.dtype, np.integer):
        raise TypeError(f"state.count must be an integer scalar, got {count!r}")
    count = int(count)
    out = {}
    for k, (name, leaf) in enumerate(zip(names, leaves)):
        if name not in inverse:
            raise ValueError(f"leaf {name!r} has no MXNet index in index_to_leaf")
        idx = inverse[name]
        arrays = tuple(np.asarray(flat[k]) for flat in trees)
        weight = np.asarray(leaf)
        for field, arr in zip(fields, arrays):
            if arr.shape != weight.shape or arr.dtype != weight.dtype:
                raise ValueError(f"leaf {name!r}: state.{field} is {arr.dtype}{list(arr.shape)} "
                                 f"but the leaf is {weight.dtype}{list(weight.shape)}")
        if name in master_leaves:
            if weight.dtype != np.float32:
                raise ValueError(f"leaf {name!r} is a master copy, so it must be float32, got "
                                 f"{weight.dtype}")
            out[idx] = (weight, arrays)
        else:
            out[idx] = arrays
    out = {i: out[i] for i in _sort_indices(out)}
    if optimizer is None:
        return MXNetStates(out, None)
    counts = dict(optimizer.get("_index_update_count") or {})
    counts.update({i: count for i in out})
    num_update = max([count, *counts.values()])
    record = optimizer.replace(num_update=num_update, _all_index_update_counts={0: counts},
                               _index_update_count=counts)
    return MXNetStates(out, record)


# The scheduler's conversion (mxopt.lr_scheduler), under the name interop has always
# given it. The class API's (optimizer_from_mxnet, updater_states_from_mxnet) live in
# mxopt.facade, which sits above interop.
lr_scheduler_from_mxnet = lr_scheduler.from_mxnet
