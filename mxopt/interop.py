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

Continuing a Gluon run of any MXNet optimizer mxopt has (all of MXNet 1.9.1's
registry: SGD, NAG, Signum, AdaGrad, AdaDelta, Adam, Adamax, Nadam, Ftrl, FTML,
RMSProp, LARS, LAMB, LBSGD, DCASGD, SGLD (with ``key=``), ccSGD, Test and
GroupAdaGrad; the table is ``mxopt._mxformat.OPTIMIZER_FORMATS``)::

    params = mxopt.interop.load_params("net.params")          # save_parameters: "0.weight", ...
    ckpt = mxopt.interop.load_states("net.states")             # Trainer.save_states
    # Gluon's Trainer numbers parameters by the sorted *full* names
    # (sorted(net.collect_params().keys())); save_parameters uses *structural*
    # names in collect order. trainer_index_map links the two; keying the params by
    # the full names keeps the Trainer's update order (Nadam needs it).
    full = [...]  # net.collect_params().keys(), in collect order (or
                  # export_param_names(load_params("net-0000.params")))
    by_full = dict(zip(full, params.values()))
    index_to_leaf = mxopt.interop.trainer_index_map(full)
    trainable = {k: v for k, v in by_full.items() if "running_" not in k}
    resumed = mxopt.interop.resume(ckpt, trainable, index_to_leaf)
    tx = resumed.transformation()               # mxopt.<resumed.alias>(**resumed.kwargs)
    params, state = resumed.params, resumed.state
    # ... updates, state = tx.update(grads, state, params) as usual.

and back to MXNet: ``save_states(path, state_to_mxnet(state, params, index_to_leaf,
ckpt.optimizer))`` writes a file ``Trainer.load_states`` accepts.
:func:`resume_rmsprop` and the other ``rmsprop_*`` functions are RMSProp-only
forms of the same code.

Leaves of a param tree are named by their key path joined with ``/`` (``{"a":
{"b": x}}`` has the leaf ``"a/b"``; a flat dict's leaves are its keys): see
:func:`leaf_names`.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mxopt import _mxformat as _fmt
from mxopt import alias as alias_module
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
from mxopt.precision import MasterWeightsState

__all__ = [
    "MXNetFormatError", "UnsafePickleError", "MXNetObject", "MXNetStates",
    "load_params", "loads_params", "save_params", "dumps_params",
    "split_export", "export_param_names",
    "load_states", "loads_states", "save_states", "dumps_states", "restricted_loads",
    "trainer_index_map", "leaf_names",
    "resume", "Resumed", "state_from_mxnet", "StateFromMXNet", "state_to_mxnet",
    "optimizer_kwargs", "optimizer_alias", "optimizer_record",
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


def _check_overrides(param_lr_mult, param_wd_mult):
    for name, table in (("param_lr_mult", param_lr_mult), ("param_wd_mult", param_wd_mult)):
        if table is not None and not isinstance(table, Mapping):
            raise TypeError(f"{name} must be a mapping of MXNet index -> multiplier, got "
                            f"{type(table).__name__}")


def _own_kwargs(optimizer: MXNetObject, fmt: _fmt.OptimizerFormat) -> dict:
    """The functional form's own keyword arguments, read from MXNet's attributes
    (and those MXNet keeps none for, from the others: ``fmt.restore``)."""
    out = {}
    for keyword, field, default in fmt.own:
        if keyword is None:
            continue  # kept in the record only (Adam's lazy_update, Nadam's m_schedule)
        value = optimizer.get(field)
        if field in fmt.clip_bounds:
            out[keyword] = _fmt.clip_bound(optimizer, field)
        elif isinstance(value, (bool, np.bool_)):
            out[keyword] = bool(value)
        elif field in fmt.integers:
            _check_int(f"the optimizer's {field}", value)
            out[keyword] = int(value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"the optimizer's {field} is {value!r}, not a str")
            out[keyword] = value
        else:
            out[keyword] = _fmt.real_field(optimizer, field)
    if fmt.restore is not None:
        out.update(fmt.restore(optimizer.fields))
    return out


def _base_kwargs(optimizer: MXNetObject, fmt: _fmt.OptimizerFormat) -> dict:
    if fmt.python_clip:  # clips whenever not None: 0 clips to 0
        clip = _fmt.real_field(optimizer, "clip_gradient", allow_none=True)
    else:
        clip = _fmt.clip_bound(optimizer, "clip_gradient")
    return dict(wd=_fmt.real_field(optimizer, "wd"),
                rescale_grad=_fmt.real_field(optimizer, "rescale_grad"), clip_gradient=clip)


def _saved_learning_rate(optimizer: MXNetObject, fmt: _fmt.OptimizerFormat):
    """The optimizer's rate: a saved ``lr_scheduler`` rebuilt as an
    :mod:`mxopt.lr_scheduler` scheduler (the state's count is MXNet's
    ``num_update``; the engine reads the scheduler at ``count + 1`` and applies
    ``lr_mult`` in float64, as MXNet), else ``lr``."""
    if optimizer.get("lr_scheduler") is not None:
        return lr_scheduler_from_mxnet(optimizer["lr_scheduler"],
                                       optimizer.get("lr") if fmt.scheduler_takes_lr else None)
    return _fmt.real_field(optimizer, "lr")


def optimizer_kwargs(optimizer: MXNetObject, leaves: Mapping[Index, str], *,
                     learning_rate: Any = None,
                     param_lr_mult: Optional[Mapping[Index, float]] = None,
                     param_wd_mult: Optional[Mapping[Index, float]] = None) -> dict:
    """Keyword arguments of the mxopt functional optimizer (``mxopt.<alias>``, the
    alias named by :func:`optimizer_alias`) that continues ``optimizer``, any MXNet
    optimizer mxopt has, on the leaves ``leaves``.

    A parameter's learning rate and weight decay are MXNet's, ``lr * lr_mult`` and
    ``wd * wd_mult``, the multipliers looked up as ``Optimizer._get_lrs`` does and
    returned as ``lr_mult``/``wd_mult`` dicts by leaf name (None where all are 1).
    Gluon keeps a parameter's own ``lr_mult``/``wd_mult`` on the Parameter, which
    ``save_states`` does not save: pass them as ``param_lr_mult={index: mult}`` /
    ``param_wd_mult``. ``rescale_grad`` is the optimizer's as saved; Gluon's
    ``Trainer.step(batch_size)`` sets it to ``rescale_grad / batch_size`` every
    step, so it is right for the batch size of the last step before the checkpoint.

    Args:
      optimizer: the optimizer of a ``.states`` file (:func:`load_states`) or of
        :func:`optimizer_record`.
      leaves: ``{mxnet_index: leaf name}`` of the leaves the transformation updates.
      learning_rate: overrides the optimizer's. By default a saved
        ``lr_scheduler`` is rebuilt as an :mod:`mxopt.lr_scheduler` scheduler
        (:func:`lr_scheduler_from_mxnet`), which mxopt reads with MXNet's counting.
      param_lr_mult, param_wd_mult: Gluon parameters' own multipliers by index.

    Returns:
      The keyword arguments: ``learning_rate``, the class's own hyperparameters
      under the functional form's names (e.g. ``beta1``, ``eps``), ``wd``,
      ``rescale_grad``, ``clip_gradient`` (as MXNet applies it), ``lr_mult``,
      ``wd_mult``, ``begin_num_update`` and ``multi_precision``; for LARS
      saved by a Gluon Trainer (no ``idx2name``: MXNet gave every parameter
      the trust ratio), ``keep_rate_names=()``.
    """
    fmt = _fmt.optimizer_format(optimizer)
    if not isinstance(leaves, Mapping) or not leaves:
        raise ValueError("leaves must be a non-empty mapping of MXNet index -> leaf name")
    _check_overrides(param_lr_mult, param_wd_mult)
    extra = {}
    if fmt.name_rule:
        if optimizer.get("idx2name"):
            _check_name_rule(optimizer, leaves)
        else:  # a Gluon Trainer gives LARS no names: every parameter takes the ratio
            extra["keep_rate_names"] = ()
    mults = {}
    for field, overrides in (("lr_mult", param_lr_mult), ("wd_mult", param_wd_mult)):
        table = {leaf: _multiplier(optimizer, i, field, overrides) for i, leaf in leaves.items()}
        mults[field] = {k: m for k, m in table.items() if m != 1.0} or None
    begin = optimizer.get("begin_num_update") or 0
    _check_int("the optimizer's begin_num_update", begin)
    return dict(
        learning_rate=_saved_learning_rate(optimizer, fmt) if learning_rate is None
        else learning_rate,
        **_own_kwargs(optimizer, fmt), **_base_kwargs(optimizer, fmt), **mults,
        begin_num_update=int(begin), multi_precision=bool(optimizer.get("multi_precision")),
        **extra)


def _check_name_rule(optimizer: MXNetObject, leaves: Mapping[Index, str]) -> None:
    """LARS's trust ratio skips names ending in gamma/beta/bias: where MXNet
    knew the names (``idx2name``; an index it lacks is named by itself), they
    and the leaf names must agree."""
    idx2name = optimizer.get("idx2name")
    for index, leaf in leaves.items():
        mxnet_name = str(idx2name.get(index, index))
        keeps, mxopt_keeps = (n.endswith(alias_module.LARS_KEEPS_RATE)
                              for n in (mxnet_name, leaf))
        if keeps != mxopt_keeps:
            given = ("idx2name" if index in idx2name
                     else "no name in idx2name (a Gluon Trainer gives none)")
            raise ValueError(
                f"leaf {leaf!r} (MXNet index {index!r}): MXNet's {optimizer.name} "
                f"{'keeps the rate of' if keeps else 'applies the trust ratio to'} it, named "
                f"{mxnet_name!r} ({given}), but mxopt.lars "
                f"{'keeps the rate of' if mxopt_keeps else 'applies the trust ratio to'} the "
                f"leaf by its name (names ending in {', '.join(alias_module.LARS_KEEPS_RATE)} "
                f"keep it): key the leaves so that their names follow MXNet's, e.g. nest each "
                f"one a level deeper ({{{leaf!r}: {{'w': ...}}}}, leaf name '{leaf}/w')")


def optimizer_alias(optimizer: MXNetObject) -> str:
    """The name of the :mod:`mxopt` function that continues an MXNet optimizer.

    Args:
      optimizer: an MXNet optimizer record (a ``.states`` file's, or
        :func:`optimizer_record`'s).

    Returns:
      The function's name, e.g. ``"adam"`` for ``mxnet.optimizer.optimizer.Adam``.
    """
    return _fmt.optimizer_format(optimizer).alias


def _check_int(what, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} is {value!r}, not an integer")


def rmsprop_kwargs(optimizer: MXNetObject, indices: Iterable[Index], *,
                   learning_rate: Any = None,
                   param_lr_mult: Optional[Mapping[Index, float]] = None,
                   param_wd_mult: Optional[Mapping[Index, float]] = None) -> dict:
    """Keyword arguments of the :func:`mxopt.rmsprop` that continues ``optimizer``
    (an MXNet RMSProp record) on the parameters ``indices``, with their common
    multipliers folded in (:func:`optimizer_kwargs` gives per-leaf multipliers
    instead, for any optimizer).

    One rate and one ``wd`` here, so all ``indices`` must share their multipliers;
    otherwise a ValueError lists them: convert each group separately and combine
    the groups with ``optax.multi_transform`` (or use :func:`optimizer_kwargs`).

    Args:
      optimizer: an ``mxnet.optimizer.optimizer.RMSProp`` :class:`MXNetObject`.
      indices: the MXNet parameter indices the transformation will update.
      learning_rate: overrides the optimizer's (by default its rate, or its saved
        scheduler rebuilt by :func:`lr_scheduler_from_mxnet`).
      param_lr_mult, param_wd_mult: Gluon parameters' own multipliers by index.

    Returns:
      ``dict(learning_rate=..., gamma1=..., gamma2=..., epsilon=..., centered=...,
      clip_weights=..., wd=..., rescale_grad=..., clip_gradient=...)``.
    """
    _fmt.check_rmsprop(optimizer)
    fmt = _fmt.optimizer_format(optimizer)
    indices = list(indices)
    if not indices:
        raise ValueError("indices is empty: name the MXNet indices of the parameters to update")
    _check_overrides(param_lr_mult, param_wd_mult)
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
                         f"optax.multi_transform, or use optimizer_kwargs (per-leaf "
                         f"multipliers)")
    lr_mult, wd_mult = distinct[0]
    if learning_rate is None:
        learning_rate = _saved_learning_rate(optimizer, fmt)
        if isinstance(learning_rate, lr_scheduler.LRScheduler) and lr_mult != 1.0:
            learning_rate = lr_scheduler.mxnet_schedule(learning_rate, lr_mult=lr_mult)
            lr_mult = 1.0
    if lr_mult != 1.0:
        if callable(learning_rate):
            schedule = learning_rate
            learning_rate = lambda count: schedule(count) * lr_mult  # noqa: E731
        else:
            learning_rate = learning_rate * lr_mult
    base = _base_kwargs(optimizer, fmt)
    return dict(learning_rate=learning_rate, **_own_kwargs(optimizer, fmt),
                wd=base["wd"] * wd_mult, rescale_grad=base["rescale_grad"],
                clip_gradient=base["clip_gradient"])


def optimizer_record(name: str, *, learning_rate: Optional[float] = None, wd: float = 0.0,
                     rescale_grad: float = 1.0, clip_gradient: Optional[float] = None,
                     multi_precision: bool = False, lr_scheduler: Optional[MXNetObject] = None,
                     begin_num_update: int = 0, **own) -> MXNetObject:
    """A fresh ``mx.optimizer.<name>`` as an :class:`MXNetObject`, with exactly the
    attributes MXNet 1.9.1's constructor sets (checked against MXNet by the golden
    scripts), to export a run that started in mxopt (:func:`state_to_mxnet` fills
    in the update counts), or to read a ``.states`` file saved without its
    optimizer (:func:`state_from_mxnet`'s ``optimizer``).

    Args:
      name: MXNet's class name: ``"SGD"``, ``"NAG"``, ``"Signum"``, ``"AdaGrad"``,
        ``"AdaDelta"``, ``"Adam"``, ``"Adamax"``, ``"Nadam"``, ``"Ftrl"``,
        ``"FTML"``, ``"RMSProp"``, ``"LARS"``, ``"LAMB"``, ``"LBSGD"``,
        ``"DCASGD"``, ``"SGLD"``, ``"ccSGD"``, ``"Test"`` or ``"GroupAdaGrad"``.
      learning_rate: a number (None: the class's default). An optax schedule has
        no MXNet equivalent: pass ``lr_scheduler=`` an MXNet scheduler record.
      wd, rescale_grad, clip_gradient, multi_precision, begin_num_update: the
        Optimizer-base arguments, as MXNet takes them.
      lr_scheduler: an MXNet LR scheduler record (e.g. from a checkpoint).
      **own: the class's own constructor arguments by MXNet's names
        (``momentum``, ``beta1``, ``eps``, ``lamda1``, ...). LBSGD's
        ``begin_epoch`` is what MXNet keeps of it, ``init_updates=begin_epoch *
        updates_per_epoch``.

    Returns:
      The optimizer record.
    """
    if callable(learning_rate):
        raise TypeError("learning_rate must be a number to export: an optax schedule has no "
                        "MXNet equivalent (pass lr_scheduler=<an MXNet scheduler record>)")
    numbers_ = dict(learning_rate=learning_rate, wd=wd, rescale_grad=rescale_grad,
                    clip_gradient=clip_gradient)
    numbers_ = {k: _as_float(k, v, k in ("learning_rate", "clip_gradient"))
                for k, v in numbers_.items()}
    own = {k: (bool(v) if isinstance(v, (bool, np.bool_)) else v
               if isinstance(v, (int, np.integer, str, dict)) else _as_float(k, v, True))
           for k, v in own.items()}
    return _fmt.optimizer_record(name, **numbers_, multi_precision=bool(multi_precision),
                                 lr_scheduler=lr_scheduler,
                                 begin_num_update=int(begin_num_update), **own)


def rmsprop_optimizer(*, learning_rate: float = 0.001, gamma1: float = 0.9, gamma2: float = 0.9,
                      epsilon: float = 1e-8, centered: bool = False,
                      clip_weights: Optional[float] = None, wd: float = 0.0,
                      rescale_grad: float = 1.0, clip_gradient: Optional[float] = None,
                      multi_precision: bool = False,
                      lr_scheduler: Optional[MXNetObject] = None,
                      begin_num_update: int = 0) -> MXNetObject:
    """:func:`optimizer_record` ``("RMSProp", ...)`` with :func:`mxopt.rmsprop`'s
    keyword arguments."""
    return optimizer_record("RMSProp", learning_rate=learning_rate, gamma1=gamma1,
                            gamma2=gamma2, epsilon=epsilon, centered=centered,
                            clip_weights=clip_weights, wd=wd, rescale_grad=rescale_grad,
                            clip_gradient=clip_gradient, multi_precision=multi_precision,
                            lr_scheduler=lr_scheduler, begin_num_update=begin_num_update)


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

class StateFromMXNet(NamedTuple):
    """What :func:`state_from_mxnet` returns.

    ``state`` is the functional optimizer's state, as its ``init`` builds it:
    its NamedTuple (``mxopt.AdamState``, ...) holding MXNet's arrays, the count
    and carried scalars, inside :class:`mxopt.MasterWeightsState` (MXNet's
    float32 master copies of float16 weights) when the optimizer has
    ``multi_precision``. ``params`` is the tree given. ``master_leaves`` names the
    leaves with a master copy.
    """
    state: Any
    params: Any
    master_leaves: Tuple[str, ...]


class Resumed(NamedTuple):
    """What :func:`resume` returns: ``mxopt.<alias>(**kwargs)`` (built by
    :meth:`transformation`) continues the MXNet run from ``state`` on ``params``."""
    alias: str
    kwargs: dict
    state: Any
    params: Any
    master_leaves: Tuple[str, ...]

    def transformation(self):
        """``mxopt.<alias>(**kwargs)``: the optimizer that continues the run."""
        return getattr(alias_module, self.alias)(**self.kwargs)


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


def _describe_entry(entry):
    if isinstance(entry, np.ndarray):
        return f"an array {entry.dtype}{list(entry.shape)}"
    if isinstance(entry, tuple):
        return "(" + ", ".join(_describe_entry(e) for e in entry) + ")"
    return "None" if entry is None else type(entry).__name__


def _split_entry(entry, fmt, names, with_master, label, cls):
    """One MXNet state entry -> (master or None, tuple of arrays named ``names``)."""
    bad = ValueError(f"{label}: not the state of MXNet's {cls} as this optimizer keeps it: "
                     f"expected {fmt.layout(names, with_master)}, got {_describe_entry(entry)}")
    master = None
    if with_master:
        pair = fmt.split_master(entry)
        if pair is None or not isinstance(pair[0], np.ndarray):
            raise bad
        master, entry = pair
    arrays = fmt.split(entry, len(names), lambda a: isinstance(a, np.ndarray))
    if arrays is None:
        raise bad
    return master, arrays


def _unwrap(state):
    """``(inner state, masters tree or None)`` of an optimizer state, through the
    ``multi_precision`` and ``skip_nonfinite`` wrappers."""
    masters = None
    if isinstance(state, MasterWeightsState):
        masters, state = state.master, state.inner_state
    if isinstance(state, optax.ApplyIfFiniteState):
        state = state.inner_state
    return state, masters


# The state fields of MXNet's per-index gradient sums on the optimizer (LBSGD's
# cumgrads; OptimizerFormat.cumgrads).
_CUMGRADS_FIELDS = ("num_cums", "cum_grad")


def _caller_values(fmt, given):
    """``fmt.caller``'s values, checked: each given (``given``: keyword -> value or
    None) exactly where the optimizer has the field."""
    out = {}
    for keyword, value in given.items():
        if keyword in fmt.caller and value is None:
            raise ValueError(f"an MXNet checkpoint has no {keyword}, which mxopt.{fmt.alias} "
                             f"carries in its state: pass {keyword}=... "
                             f"(e.g. key=jax.random.key(seed) for the noise from here on)")
        if keyword not in fmt.caller and value is not None:
            raise ValueError(f"{keyword}= is for optimizers whose state carries one "
                             f"(SGLD's PRNG key); mxopt.{fmt.alias} has none")
        if value is not None:
            out[keyword] = value
    return out


def _template(fmt, optimizer, params, caller=None):
    """The abstract state ``mxopt.<alias>(...).init(params)`` builds for this
    optimizer record: ``(state, inner state NamedTuple class, MXNet's buffer
    names)``; ``caller`` are ``fmt.caller``'s values (placeholders by default)."""
    placeholders = {"key": jax.random.PRNGKey(0)}
    kwargs = dict(_own_kwargs(optimizer, fmt),
                  multi_precision=bool(optimizer.get("multi_precision")),
                  **(caller if caller is not None
                     else {k: placeholders[k] for k in fmt.caller}))
    tx = getattr(alias_module, fmt.alias)(**kwargs)  # the default rate: init ignores it
    with warnings.catch_warnings():
        # init's advice about float16 state is for new runs; MXNet's run chose it.
        warnings.simplefilter("ignore", UserWarning)
        template = jax.eval_shape(tx.init, params)
    inner, _ = _unwrap(template)
    return template, type(inner), _mxnet_buffers(fmt, type(inner))


def _mxnet_buffers(fmt, state_cls):
    """The state fields that are MXNet's per-index state arrays, in MXNet's order."""
    other = ({field for field, _ in fmt.carry} | set(fmt.caller)
             | (set(_CUMGRADS_FIELDS) if fmt.cumgrads else set()))
    return tuple(f for f in state_cls._fields[1:] if f not in other)


def _count_from(optimizer, fmt, indices):
    """mxopt's one count for an MXNet optimizer's per-parameter counts."""
    num_update = optimizer.get("num_update")
    _check_int("the optimizer's num_update", num_update)
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
    if fmt.uses_count:
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"the parameters' update counts {counts} differ: MXNet's {optimizer.name} "
                f"reads each parameter's own count t (its bias correction), which one mxopt "
                f"count cannot represent; convert each group of equal counts separately, or "
                f"pass count=... to choose one deliberately")
        return next(iter(counts.values()))
    return num_update


def state_from_mxnet(states: MXNetStates, params, index_to_leaf: Mapping[Index, str], *,
                     optimizer: Optional[MXNetObject] = None, count: Optional[int] = None,
                     allow_unused: bool = False, key: Any = None) -> StateFromMXNet:
    """MXNet optimizer states (any optimizer mxopt has) -> the state of the mxopt
    functional optimizer that continues them, for ``params``.

    Args:
      states: a loaded ``.states`` file (:func:`load_states`).
      params: the tree mxopt will update (e.g. the trainable part of
        :func:`load_params`' dict), in the dtypes MXNet trained (float16 where
        MXNet kept master copies). Every leaf needs an MXNet index and a state.
      index_to_leaf: ``{mxnet_index: leaf name}`` (:func:`trainer_index_map` builds
        it for Gluon; names are :func:`leaf_names`). Indices without a state in the
        file (non-trainable parameters) may map to leaves not in ``params``.
      optimizer: the optimizer whose states these are; by default the file's.
        A file saved without it (``dump_optimizer=False``) needs it: an
        :func:`optimizer_record` with the run's class and options.
      count: the state's update count. By default the optimizer's: ``num_update``
        (the number of steps MXNet counted, ``begin_num_update`` included), which
        drives its LR scheduler and, as ``t = count + 1``, the bias corrections
        (Adam, Adamax, Nadam, FTML). Where MXNet's per-parameter counts differ in
        a way that matters (a scheduler, or a bias correction), a ValueError
        explains; ``count=`` chooses one deliberately.
      allow_unused: accept states in the file that no leaf of ``params`` receives
        (else a ValueError lists them, so that nothing is dropped by accident).
      key: SGLD only, and required there: the JAX PRNG key the noise comes from
        from here on (MXNet draws from its global generator, which no file
        holds, so a resumed SGLD run matches MXNet's in the drift only).

    Returns:
      A :class:`StateFromMXNet`. Its state has the structure, shapes and dtypes
      of ``mxopt.<alias>(**kwargs).init(params)`` (with the
      :func:`optimizer_kwargs`), and MXNet's values: per-leaf arrays, the count,
      Nadam's ``m_schedule`` (the optimizer-wide scalar MXNet pickles; float32
      in the state unless ``jax_enable_x64``), LARS's ``last_lr`` (``cur_lr``),
      LBSGD's ``num_cums`` and ``cum_grad`` (the gradient sums MXNet keeps on the
      optimizer, ``cumgrads``), SGLD's ``key``, and under ``multi_precision`` the
      float32 master copy of every float16 leaf. Shapes and dtypes must match
      the leaves (the errors name the leaf and its index).
    """
    if not isinstance(states, MXNetStates):
        raise TypeError(f"states must be an MXNetStates (load_states(...)), got "
                        f"{type(states).__name__}")
    record = states.optimizer if optimizer is None else optimizer
    if record is None:
        raise ValueError("the file has no optimizer (saved with dump_optimizer=False), so its "
                         "optimizer and hyperparameters are unknown: pass optimizer="
                         "optimizer_record('<MXNet class>', ...) and count=<number of updates "
                         "done>")
    fmt = _fmt.optimizer_format(record, "the file's optimizer" if optimizer is None
                                else "optimizer")
    if not isinstance(allow_unused, bool):
        raise TypeError(f"allow_unused must be a bool, got {allow_unused!r}")
    inverse = _check_index_map(index_to_leaf)
    names, leaves, treedef = _named_leaves(params, "params")
    if not leaves:
        raise ValueError("params has no leaves")
    for name in names:
        if name not in inverse:
            raise ValueError(f"leaf {name!r} has no MXNet index in index_to_leaf (leaf names "
                             f"join the key path with '/'; see leaf_names)")
    caller = _caller_values(fmt, {"key": key})
    template, state_cls, buffer_names = _template(fmt, record, params, caller)
    inner_template, master_template = _unwrap(template)
    buffer_templates = [treedef.flatten_up_to(getattr(inner_template, b)) for b in buffer_names]
    with_masters = (treedef.flatten_up_to(master_template) if master_template is not None
                    else [optax.MaskedNode()] * len(leaves))

    masters, columns, used = [], [[] for _ in buffer_names], []
    for k, (name, leaf) in enumerate(zip(names, leaves)):
        idx = inverse[name]
        label = f"leaf {name!r} (MXNet index {idx!r})"
        if idx not in states.states:
            raise ValueError(f"{label} has no optimizer state in the file: MXNet creates it at "
                             f"the parameter's first update; was the parameter trained?")
        used.append(idx)
        shape = tuple(np.shape(leaf))
        with_master = not isinstance(with_masters[k], optax.MaskedNode)
        master, arrays = _split_entry(states.states[idx], fmt, buffer_names, with_master,
                                      label, record.name)
        if master is not None:
            if master.dtype != np.float32 or master.shape != shape:
                raise ValueError(f"{label}: the master copy is {master.dtype}"
                                 f"{list(master.shape)}, expected float32{list(shape)}")
        for b, (field, arr) in enumerate(zip(buffer_names, arrays)):
            want = buffer_templates[b][k]  # init's: the leaf's shape, or the optimizer's own
            if arr.shape != want.shape:
                own = "" if want.shape == shape else f" (mxopt.{fmt.alias} keeps {want.shape})"
                raise ValueError(f"{label}: state {field} has shape {arr.shape} but the "
                                 f"leaf has shape {shape}{own}")
            if arr.dtype != want.dtype:
                raise ValueError(f"{label}: state {field} is {arr.dtype} but the leaf is "
                                 f"{want.dtype}" + (" (its master copy)" if master is not None
                                                    else ""))
            columns[b].append(jnp.asarray(arr))
        masters.append(master)

    if fmt.carry and used != _sort_indices(used):
        # Gluon's Trainer (and Module) update in index order; mxopt visits leaves in
        # the params' flatten order.
        order = ", ".join(f"{n!r} (index {i!r})" for n, i in zip(names, used))
        raise ValueError(f"MXNet's {record.name} advances {', '.join(a for _, a in fmt.carry)} "
                         f"on every parameter's update, in the Trainer's index order, and mxopt "
                         f"in the params' flatten order, which differs here: {order}. Key the "
                         f"params so that they flatten in index order, e.g. by the Trainer's "
                         f"full names (trainer_index_map(full_names) without structural_names)")
    used_set = set(used)
    unused = [i for i in states.states if i not in used_set]
    if unused and not allow_unused:
        described = ", ".join(f"{i!r}" + (f" ({index_to_leaf[i]!r})" if i in index_to_leaf else "")
                              for i in _sort_indices(unused))
        raise ValueError(f"the file holds states for MXNet indices {described} that no leaf of "
                         f"params receives; add those leaves, or pass allow_unused=True to drop "
                         f"them")
    if count is None:
        if states.optimizer is None and optimizer is not None:
            raise ValueError("the file has no optimizer (saved with dump_optimizer=False), so "
                             "its update count is unknown: pass count=<number of updates done>")
        count = _count_from(record, fmt, used)
    if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an int, got {count!r}")
    if not 0 <= int(count) <= _INT32_MAX:
        raise ValueError(f"count must be in [0, {_INT32_MAX}], got {count}")

    fields = {b: treedef.unflatten(col) for b, col in zip(buffer_names, columns)}
    if fmt.cumgrads:
        fields.update(_cumgrads_from_mxnet(record, names, inverse, treedef,
                                           treedef.flatten_up_to(inner_template.cum_grad)))
    if caller:
        fresh = getattr(alias_module, fmt.alias)(**_own_kwargs(record, fmt), **caller).init({})
        fields.update({field: getattr(fresh, field) for field in caller})
    for field, attr in fmt.carry:
        value = _fmt.real_field(record, attr, allow_none=True)
        fields[field] = jnp.asarray(math.nan if value is None else value,
                                    getattr(inner_template, field).dtype)
    state = state_cls(count=jnp.asarray(int(count), jnp.int32), **fields)
    master_leaves = tuple(n for n, m in zip(names, masters) if m is not None)
    if master_template is not None:
        state = MasterWeightsState(
            master=treedef.unflatten([optax.MaskedNode() if m is None else jnp.asarray(m)
                                      for m in masters]), inner_state=state)
    got, want = jax.tree.structure(state), jax.tree.structure(template)
    if got != want:  # the per-leaf checks above make this unreachable
        raise AssertionError(f"converted state {got} does not have init's structure {want}")
    return StateFromMXNet(state, params, master_leaves)


def _cumgrads_from_mxnet(record, names, inverse, treedef, templates):
    """The state's ``num_cums`` and ``cum_grad`` from MXNet's ``cumgrads``."""
    table = record.get("cumgrads") or {}
    if not isinstance(table, dict):
        raise ValueError(f"the optimizer's cumgrads is {type(table).__name__}, not a dict")
    init = record.get("init_updates", 0)
    _check_int("the optimizer's init_updates", init)
    nums, sums = {}, []
    for name, want in zip(names, templates):
        idx = inverse[name]
        label = f"leaf {name!r} (MXNet index {idx!r})"
        entry = table.get(idx)
        if entry is None:  # not called yet: MXNet starts at init_updates + 1
            nums[idx], total = int(init), 0
        else:
            if not isinstance(entry, dict) or set(entry) != {"cum_grad", "num_cums"}:
                raise ValueError(f"{label}: the optimizer's cumgrads entry is {entry!r}, not "
                                 f"{{'cum_grad': ..., 'num_cums': ...}}")
            _check_int(f"{label}: num_cums", entry["num_cums"])
            nums[idx], total = int(entry["num_cums"]), entry["cum_grad"]
        if isinstance(total, np.ndarray):
            if total.shape != want.shape or total.dtype != want.dtype:
                raise ValueError(f"{label}: cum_grad is {total.dtype}{list(total.shape)}, "
                                 f"expected {want.dtype}{list(want.shape)}")
            sums.append(jnp.asarray(total))
        elif isinstance(total, (int, np.integer)) and not isinstance(total, bool) and total == 0:
            sums.append(jnp.zeros(want.shape, want.dtype))  # MXNet's reset: the int 0
        else:
            raise ValueError(f"{label}: cum_grad is {_describe_entry(total)}, not an array or 0")
    if len(set(nums.values())) > 1:
        raise ValueError(f"the parameters' LBSGD call counts (cumgrads num_cums) {nums} differ: "
                         f"mxopt.lbsgd counts calls once per step for the whole tree, as a "
                         f"Trainer that updates every parameter each step does; convert each "
                         f"group of equal counts separately")
    return dict(num_cums=jnp.asarray(next(iter(nums.values())), jnp.int32),
                cum_grad=treedef.unflatten(sums))


def resume(states: MXNetStates, params, index_to_leaf: Mapping[Index, str], *,
           learning_rate: Any = None,
           param_lr_mult: Optional[Mapping[Index, float]] = None,
           param_wd_mult: Optional[Mapping[Index, float]] = None,
           count: Optional[int] = None, allow_unused: bool = False,
           key: Any = None) -> Resumed:
    """Continue a Gluon ``Trainer.save_states`` checkpoint of any MXNet optimizer
    mxopt has (every class of MXNet 1.9.1's registry: SGD, NAG, Signum, AdaGrad,
    AdaDelta, Adam, Adamax, Nadam, Ftrl, FTML, RMSProp, LARS, LAMB, LBSGD,
    DCASGD, SGLD, ccSGD, Test and contrib's GroupAdaGrad) with its mxopt
    functional form.

    :func:`state_from_mxnet` and :func:`optimizer_kwargs` in one call::

        resumed = interop.resume(interop.load_states("net.states"), params, index_to_leaf)
        tx = resumed.transformation()        # mxopt.<alias>(**resumed.kwargs)
        params, state = resumed.params, resumed.state

    Args:
      states: a loaded ``.states`` file with its optimizer (``Trainer.save_states``
        always saves it).
      params, index_to_leaf, count, allow_unused: as :func:`state_from_mxnet`.
      learning_rate, param_lr_mult, param_wd_mult: as :func:`optimizer_kwargs`.
      key: SGLD's PRNG key (required there, refused elsewhere): in the state
        and in ``kwargs``, as :func:`mxopt.sgld` takes it.

    Returns:
      A :class:`Resumed`: the alias's name, its keyword arguments, the state and
      the params to continue from, and the leaves with master copies.
    """
    if not isinstance(states, MXNetStates):
        raise TypeError(f"states must be an MXNetStates (load_states(...)), got "
                        f"{type(states).__name__}")
    if states.optimizer is None:
        raise ValueError("the file has no optimizer (saved with dump_optimizer=False), so its "
                         "hyperparameters are unknown: use state_from_mxnet(..., optimizer=..., "
                         "count=...) and choose the optimizer's arguments yourself")
    converted = state_from_mxnet(states, params, index_to_leaf, count=count,
                                 allow_unused=allow_unused, key=key)
    inverse = _check_index_map(index_to_leaf)
    leaves = {inverse[name]: name for name in leaf_names(params)}
    kwargs = optimizer_kwargs(states.optimizer, leaves, learning_rate=learning_rate,
                              param_lr_mult=param_lr_mult, param_wd_mult=param_wd_mult)
    kwargs.update(_caller_values(_fmt.optimizer_format(states.optimizer), {"key": key}))
    return Resumed(_fmt.optimizer_format(states.optimizer).alias, kwargs, converted.state,
                   converted.params, converted.master_leaves)


def _rmsprop_record(states: MXNetStates) -> MXNetObject:
    """The file's RMSProp, or for a file without one (``dump_optimizer=False``) a
    record whose variant and ``multi_precision`` follow the states' layout."""
    if states.optimizer is not None:
        _fmt.check_rmsprop(states.optimizer, "the file's optimizer")
        return states.optimizer
    entries = list(states.states.values())
    with_master = any(isinstance(e, tuple) and len(e) == 2 and isinstance(e[1], tuple)
                      for e in entries)
    inner = [e[1] if with_master and isinstance(e, tuple) and len(e) == 2 else e
             for e in entries]
    centered = any(isinstance(e, tuple) and len(e) == 3 for e in inner)
    return rmsprop_optimizer(centered=centered, multi_precision=with_master)


def rmsprop_state_from_mxnet(states: MXNetStates, params, index_to_leaf: Mapping[Index, str], *,
                             count: Optional[int] = None,
                             allow_unused: bool = False) -> RMSPropFromMXNet:
    """MXNet RMSProp optimizer states -> :func:`mxopt.rmsprop` state for ``params``,
    with MXNet's float32 master copies (``multi_precision`` float16 weights) in
    ``params`` rather than in the state (:func:`state_from_mxnet` keeps them in a
    :class:`mxopt.MasterWeightsState` instead).

    Args:
      states, params, index_to_leaf, count, allow_unused: as
        :func:`state_from_mxnet`; a file without its optimizer needs ``count``
        (its variant and ``multi_precision`` are read from the states' layout).

    Returns:
      A :class:`RMSPropFromMXNet`.
    """
    if not isinstance(states, MXNetStates):
        raise TypeError(f"states must be an MXNetStates (load_states(...)), got "
                        f"{type(states).__name__}")
    record = _rmsprop_record(states)
    if states.optimizer is None and count is None:
        raise ValueError("the file has no optimizer (saved with dump_optimizer=False): pass "
                         "count=<number of updates done>")
    converted = state_from_mxnet(states, params, index_to_leaf, optimizer=record, count=count,
                                 allow_unused=allow_unused)
    state, masters = _unwrap(converted.state)
    new_params = params
    if masters is not None:
        new_params = jax.tree.map(lambda p, m: p if isinstance(m, optax.MaskedNode) else m,
                                  params, masters,
                                  is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    return RMSPropFromMXNet(state, new_params, converted.master_leaves)


def resume_rmsprop(states: MXNetStates, params, index_to_leaf: Mapping[Index, str], *,
                   learning_rate: Any = None,
                   param_lr_mult: Optional[Mapping[Index, float]] = None,
                   param_wd_mult: Optional[Mapping[Index, float]] = None,
                   count: Optional[int] = None, allow_unused: bool = False) -> ResumedRMSProp:
    """:func:`resume` for RMSProp in its original form: the
    :func:`rmsprop_state_from_mxnet` state and params, and :func:`rmsprop_kwargs`
    (one rate for all ``params``). Needs the optimizer in the file."""
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

def _format_of_state(inner) -> _fmt.OptimizerFormat:
    for fmt in _fmt.OPTIMIZER_FORMATS.values():
        if any(getattr(alias_module, name) is type(inner) for name in fmt.states):
            return fmt
    raise TypeError(f"state must be the state of an mxopt optimizer with an MXNet "
                    f"counterpart ({', '.join(sorted(_fmt.OPTIMIZER_FORMATS))}; e.g. "
                    f"mxopt.adam(...).init(params)), got {type(inner).__name__}")


def state_to_mxnet(state, params, index_to_leaf: Mapping[Index, str],
                   optimizer: Optional[MXNetObject] = None, *,
                   master_leaves: Iterable[str] = ()) -> MXNetStates:
    """An mxopt functional optimizer's state -> an :class:`MXNetStates` that
    :func:`save_states` writes for MXNet's ``Trainer.load_states`` /
    ``Updater.set_states``, which then continue the run.

    Args:
      state: the state of ``mxopt.<alias>`` for an optimizer MXNet has (its
        NamedTuple, inside :class:`mxopt.MasterWeightsState` with
        ``multi_precision`` and ``optax.ApplyIfFiniteState`` with
        ``skip_nonfinite``).
      params: the tree it updates.
      index_to_leaf: ``{mxnet_index: leaf name}``, as for the other direction.
      optimizer: the MXNet optimizer record to save with the states: the one read
        from the checkpoint (its scheduler, multipliers and names are kept), or
        :func:`optimizer_record` for a run that started in mxopt; it must be the
        class and variant the state belongs to. Its update counts are set from
        ``state.count`` (``num_update`` and every exported index's count, on
        device 0), and carried scalars (Nadam's ``m_schedule``) from the state.
        None writes the states alone (``dump_optimizer=False``): MXNet then keeps
        its own optimizer and counts.
      master_leaves: leaves of ``params`` that are float32 master copies of
        MXNet float16 weights, where the state has no
        :class:`mxopt.MasterWeightsState` (as :func:`rmsprop_state_from_mxnet`
        returns them).

    What MXNet keeps elsewhere: LARS's ``last_lr`` becomes ``cur_lr``, LBSGD's
    ``num_cums``/``cum_grad`` the optimizer's ``cumgrads`` (so a states-only
    export, ``optimizer=None``, leaves MXNet its own sums), SGLD's key is
    dropped (MXNet has none), and Test, which never counts, keeps the record's
    counts.

    Returns:
      The :class:`MXNetStates`. ``Trainer.load_states`` replaces the Trainer's
      optimizer by the saved one, so the saved hyperparameters are the ones MXNet
      continues with (Gluon's ``step(batch_size)`` still sets ``rescale_grad``).
    """
    inner, masters_tree = _unwrap(state)
    fmt = _format_of_state(inner)
    if optimizer is not None:
        record_fmt = _fmt.optimizer_format(optimizer)
        if record_fmt.states != fmt.states:
            raise ValueError(f"the optimizer is a {optimizer.cls} but the state is a "
                             f"{type(inner).__name__} (mxopt.{fmt.alias})")
        fmt = record_fmt  # ccSGD keeps SGD's state
        expected = _template(fmt, optimizer, params)[1]
        if expected is not type(inner):
            own = ", ".join(f"{field}={optimizer.get(field)!r}" for kw, field, _ in fmt.own
                            if kw is not None)
            raise ValueError(f"the optimizer ({optimizer.name} with {own}) keeps a "
                             f"{expected.__name__}, but the state is a {type(inner).__name__}")
    inverse = _check_index_map(index_to_leaf)
    names, leaves, treedef = _named_leaves(params, "params")
    if isinstance(master_leaves, str):
        raise TypeError("master_leaves must be an iterable of leaf names, not a single string")
    in_params = set(master_leaves)
    unknown = in_params - set(names)
    if unknown:
        raise ValueError(f"master_leaves names {sorted(unknown)}, which are not leaves of params")
    flat_masters = [None] * len(leaves)
    if masters_tree is not None:
        try:
            flat = treedef.flatten_up_to(masters_tree)
        except (ValueError, TypeError) as e:
            raise ValueError(f"state.master does not have the structure of params: {e}") from None
        flat_masters = [None if isinstance(m, optax.MaskedNode) else np.asarray(m) for m in flat]
    has_master = in_params | {n for n, m in zip(names, flat_masters) if m is not None}
    if has_master and (optimizer is None or not optimizer.get("multi_precision")):
        raise ValueError("master_leaves need an optimizer with multi_precision=True (MXNet "
                         "keeps master copies only then)")
    fields = _mxnet_buffers(fmt, type(inner))
    if fmt.cumgrads:
        fields += ("cum_grad",)
    columns = []
    for field in fields:
        try:
            columns.append(treedef.flatten_up_to(getattr(inner, field)))
        except (ValueError, TypeError) as e:
            raise ValueError(f"state.{field} does not have the structure of params: {e}") from None
    count = np.asarray(inner.count)
    if count.shape != () or not np.issubdtype(count.dtype, np.integer):
        raise TypeError(f"state.count must be an integer scalar, got {count!r}")
    count = int(count)

    # What init builds on the weights MXNet updates (the master copies where there
    # are): each buffer's shape and dtype (GroupAdaGrad's (rows, 1); float32 for
    # Test's copy whatever the weight).
    weights = [flat_masters[k] if flat_masters[k] is not None
               else np.asarray(leaf) for k, leaf in enumerate(leaves)]
    weights = [np.asarray(leaves[k]) if n in in_params else w
               for k, (n, w) in enumerate(zip(names, weights))]
    weights_tree = treedef.unflatten(weights)
    record = (optimizer if optimizer is not None
              else _record_of_variant(fmt, type(inner), weights_tree))
    template = _unwrap(_template(fmt, record.replace(multi_precision=False), weights_tree)[0])[0]
    wanted = [treedef.flatten_up_to(getattr(template, field)) for field in fields]

    out, sums = {}, {}
    for k, (name, leaf) in enumerate(zip(names, leaves)):
        if name not in inverse:
            raise ValueError(f"leaf {name!r} has no MXNet index in index_to_leaf")
        idx = inverse[name]
        master = np.asarray(leaf) if name in in_params else flat_masters[k]
        if master is not None and master.dtype != np.float32:
            raise ValueError(f"leaf {name!r} is a master copy, so it must be float32, got "
                             f"{master.dtype}")
        arrays = tuple(np.asarray(col[k]) for col in columns)
        for field, arr, want in zip(fields, arrays, wanted):
            if arr.shape != want[k].shape or arr.dtype != want[k].dtype:
                raise ValueError(f"leaf {name!r}: state.{field} is {arr.dtype}{list(arr.shape)} "
                                 f"but mxopt.{fmt.alias} keeps {want[k].dtype}"
                                 f"{list(want[k].shape)} for the leaf "
                                 f"{weights[k].dtype}{list(weights[k].shape)}")
        if fmt.cumgrads:
            sums[idx], arrays = arrays[-1], arrays[:-1]
        out[idx] = fmt.entry(arrays, master)
    out = {i: out[i] for i in _sort_indices(out)}
    if optimizer is None:
        return MXNetStates(out, None)
    changes = {}
    if fmt.counts:  # Test never counts: MXNet's counts stay as they are
        counts = dict(optimizer.get("_index_update_count") or {})
        counts.update({i: count for i in out})
        changes = dict(num_update=max([count, *counts.values()]),
                       _all_index_update_counts={0: counts}, _index_update_count=counts)
    carry = {attr: float(np.asarray(getattr(inner, field))) for field, attr in fmt.carry}
    changes.update({attr: None if math.isnan(value) else value for attr, value in carry.items()})
    if fmt.cumgrads:
        changes["cumgrads"] = _cumgrads_to_mxnet(optimizer, int(np.asarray(inner.num_cums)),
                                                 sums)
    return MXNetStates(out, optimizer.replace(**changes))


def _record_of_variant(fmt, state_cls, params):
    """A fresh record of ``fmt``'s class whose variant keeps ``state_cls`` (a
    states-only export has no record to say it): the defaults, or the variant
    switch (momentum or centered) flipped."""
    name = next(n for n, f in _fmt.OPTIMIZER_FORMATS.items() if f is fmt)
    own = {field for _, field, _ in fmt.own}
    tries = [{}] + [{k: v} for k, v in (("momentum", 0.9), ("momentum", 0.0),
                                         ("centered", True)) if k in own]
    for changes in tries:
        record = _fmt.optimizer_record(name, **changes)
        try:
            if _template(fmt, record, params)[1] is state_cls:
                return record
        except ValueError:  # a variant the class refuses (DCASGD's momentum)
            continue
    raise AssertionError(f"no {name} record keeps a {state_cls.__name__}")  # table bug


def _cumgrads_to_mxnet(optimizer, num_cums, sums):
    """MXNet's ``cumgrads`` for the state's ``num_cums`` and ``cum_grad`` sums: no
    entry before the first call, the int 0 right after an update (MXNet's reset)."""
    table = dict(optimizer.get("cumgrads") or {})
    if num_cums == optimizer.get("init_updates", 0):
        for idx in sums:
            table.pop(idx, None)
        return table
    reset = num_cums % _fmt.real_field(optimizer, "batch_scale") == 0
    for idx, total in sums.items():
        table[idx] = {"cum_grad": 0 if reset else total, "num_cums": num_cums}
    return table


def rmsprop_state_to_mxnet(state: Union[RMSPropState, CenteredRMSPropState], params,
                           index_to_leaf: Mapping[Index, str],
                           optimizer: Optional[MXNetObject] = None, *,
                           master_leaves: Iterable[str] = ()) -> MXNetStates:
    """:func:`state_to_mxnet` for an :func:`mxopt.rmsprop` state (master copies in
    ``params``, named by ``master_leaves``, as :func:`rmsprop_state_from_mxnet`
    returns them); ``optimizer``, if given, must be an RMSProp
    (:func:`rmsprop_optimizer` for a run that started in mxopt)."""
    if not isinstance(state, (RMSPropState, CenteredRMSPropState)):
        raise TypeError(f"state must be an mxopt.rmsprop state (RMSPropState or "
                        f"CenteredRMSPropState), got {type(state).__name__}")
    if optimizer is not None:
        _fmt.check_rmsprop(optimizer)
    return state_to_mxnet(state, params, index_to_leaf, optimizer, master_leaves=master_leaves)


# The scheduler's conversion (mxopt.lr_scheduler), under the name interop has always
# given it. The class API's (optimizer_from_mxnet, optimizer_to_mxnet,
# updater_states_from_mxnet, Updater.get_states(mxnet=True)) live in mxopt.facade; it
# and interop share the table in mxopt._mxformat and neither imports the other.
lr_scheduler_from_mxnet = lr_scheduler.from_mxnet
