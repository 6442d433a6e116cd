"""MXNet 1.9.1's optimizer class API on JAX arrays, for porting MXNet code.

``mxopt.RMSProp``, ``mxopt.Optimizer``, the registry (``mxopt.create``,
``mxopt.register``) and ``mxopt.Updater`` / ``mxopt.get_updater`` behave as
``mxnet.optimizer``'s, method for method, with one documented difference: JAX
arrays are immutable, so ``update`` and ``update_multi_precision`` return
``(new_weight, new_state)`` and ``Updater.__call__`` returns the new weight.

The arithmetic is not reimplemented here: each ``update`` runs ``mxopt.rmsprop``
for one step inside a cached ``jax.jit`` call whose hyperparameters (learning
rate after scheduler and multiplier, weight decay, ...) are arguments, so
changing them never recompiles. The Python side (update counts, scheduler
calls, ``lr_mult``/``wd_mult`` lookup through ``param_dict``, index and name)
follows MXNet's code line for line.
"""
from __future__ import annotations

import functools
import io
import numbers
import pickle
import warnings
from typing import Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mxopt import _validation as v
from mxopt import alias
from mxopt.precision import LOW_PRECISION_DTYPES

__all__ = ["Optimizer", "RMSProp", "Updater", "create", "register", "get_updater"]


class Optimizer:
    """MXNet 1.9.1's ``mxnet.optimizer.Optimizer`` base class.

    Args:
      rescale_grad: multiplies every gradient (e.g. ``1 / batch_size``).
      param_idx2name: dict from index to parameter name. When given, weight decay
        defaults to 0 for names not ending in ``_weight`` or ``_gamma``.
      wd: weight decay.
      clip_gradient: clip gradients to ``[-clip_gradient, clip_gradient]``.
      learning_rate: the learning rate; None means 0.01 unless ``lr_scheduler``
        is given. When both are given, ``learning_rate`` overwrites the
        scheduler's ``base_lr`` (with MXNet's warning).
      lr_scheduler: a callable of ``num_update``, e.g. an
        :mod:`mxopt.lr_scheduler` scheduler.
      sym: JAX has no Symbol. Pass a mapping from parameter name to its
        attribute dict, as MXNet reads ``sym.attr_dict()``:
        ``{"fc1_weight": {"__lr_mult__": "2", "__wd_mult__": "0"}}``; its keys
        play the role of ``sym.list_arguments()``.
      begin_num_update: the update count to start from.
      multi_precision: keep float32 master weights for float16 (and, beyond
        MXNet, bfloat16) weights.
      param_dict: dict from index to an object with ``lr_mult`` and ``wd_mult``
        attributes (Gluon's Parameter); takes precedence over the dicts.
    """

    opt_registry: Dict[str, type] = {}

    def __init__(self, rescale_grad=1., param_idx2name=None, wd=0., clip_gradient=None,
                 learning_rate=None, lr_scheduler=None, sym=None, begin_num_update=0,
                 multi_precision=False, param_dict=None):
        v.check_scalar("rescale_grad", rescale_grad, low=0.0, low_open=True)
        v.check_scalar("wd", wd, low=0.0)
        v.check_scalar("clip_gradient", clip_gradient, low=0.0, allow_none=True)
        if learning_rate is not None:
            v.check_scalar("learning_rate", learning_rate, low=0.0)
        if lr_scheduler is not None and not callable(lr_scheduler):
            raise TypeError(f"lr_scheduler must be callable (num_update -> lr), "
                            f"got {type(lr_scheduler).__name__}")
        if isinstance(begin_num_update, bool) or not isinstance(begin_num_update,
                                                                numbers.Integral):
            raise TypeError(f"begin_num_update must be an int, got {begin_num_update!r}")
        if begin_num_update < 0:
            raise ValueError(f"begin_num_update must be >= 0, got {begin_num_update}")
        v.check_bool("multi_precision", multi_precision)
        if param_idx2name is None:
            param_idx2name = {}
        if not isinstance(param_idx2name, dict):
            raise TypeError("param_idx2name should be a dict of param indexes to names.")
        if sym is not None and not isinstance(sym, Mapping):
            raise TypeError("sym must be a mapping from parameter name to its attribute "
                            "dict, e.g. {'fc1_weight': {'__lr_mult__': '2'}}")

        self.rescale_grad = rescale_grad
        self.lr_scheduler = lr_scheduler
        if self.lr_scheduler is None and learning_rate is None:
            learning_rate = 0.01
        self.lr = learning_rate
        if self.lr_scheduler is not None and learning_rate is not None:
            if self.lr_scheduler.base_lr != learning_rate:
                print(UserWarning("learning rate from ``lr_scheduler`` has been "
                                  "overwritten by ``learning_rate`` in optimizer."))
                self.lr_scheduler.base_lr = learning_rate
        self.wd = wd
        self.lr_mult = {}
        self.wd_mult = {}
        self.begin_num_update = begin_num_update
        self.num_update = begin_num_update
        self._all_index_update_counts = {0: {}}
        self._index_update_count = self._all_index_update_counts[0]
        self.clip_gradient = clip_gradient
        self.multi_precision = multi_precision
        self.aggregate_num = 0
        self.idx2name = param_idx2name.copy()
        self.sym_info = ((dict(sym), list(sym.keys())) if sym is not None else ())
        self.param_dict = param_dict if param_dict else {}
        self.set_lr_mult({})
        self.set_wd_mult({})

    @staticmethod
    def register(klass):
        """Register an optimizer class under its lower-cased name (warns when
        it overrides one)."""
        if not isinstance(klass, type):
            raise TypeError(f"register expects a class, got {klass!r}")
        name = klass.__name__.lower()
        if name in Optimizer.opt_registry:
            warnings.warn('WARNING: New optimizer %s.%s is overriding existing optimizer %s.%s'
                          % (klass.__module__, klass.__name__,
                             Optimizer.opt_registry[name].__module__,
                             Optimizer.opt_registry[name].__name__), stacklevel=2)
        Optimizer.opt_registry[name] = klass
        return klass

    @staticmethod
    def create_optimizer(name, **kwargs):
        """Instantiate a registered optimizer by name (case-insensitive)."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if name.lower() in Optimizer.opt_registry:
            return Optimizer.opt_registry[name.lower()](**kwargs)
        raise ValueError('Cannot find optimizer %s' % name)

    @property
    def learning_rate(self):
        if self.lr_scheduler is not None:
            return self.lr_scheduler(self.num_update)
        return self.lr

    def create_state(self, index, weight):
        """Create the auxiliary state of one weight."""

    def create_state_multi_precision(self, index, weight):
        """Create the state, with a float32 master copy first for a float16 (or
        bfloat16) weight when ``multi_precision`` is on."""
        weight = _as_array("weight", weight)
        if self.multi_precision and weight.dtype in LOW_PRECISION_DTYPES:
            weight_master_copy = weight.astype(jnp.float32)
            return (weight_master_copy,) + (self.create_state(index, weight_master_copy),)
        if weight.dtype in LOW_PRECISION_DTYPES and not self.multi_precision:
            warnings.warn("Accumulating with float16 in optimizer can lead to "
                          "poor accuracy or slow convergence. "
                          "Consider using multi_precision=True option of the "
                          "optimizer", stacklevel=2)
        return self.create_state(index, weight)

    def update(self, index, weight, grad, state):
        """Update one weight; returns ``(new_weight, new_state)``."""
        raise NotImplementedError()

    def update_multi_precision(self, index, weight, grad, state):
        """:meth:`update`, on the float32 master copy when ``multi_precision`` is on
        and the weight is float16 (or bfloat16); returns ``(new_weight, new_state)``."""
        weight = _as_array("weight", weight)
        if self.multi_precision and weight.dtype in LOW_PRECISION_DTYPES:
            weight_master_copy, original_state = state
            grad32 = _as_array("grad", grad).astype(jnp.float32)
            master, original_state = self.update(index, weight_master_copy, grad32,
                                                 original_state)
            return master.astype(weight.dtype), (master, original_state)
        return self.update(index, weight, grad, state)

    def set_learning_rate(self, lr):
        """Set the learning rate; a UserWarning is raised when a scheduler is set."""
        if self.lr_scheduler is not None:
            raise UserWarning("LRScheduler of the optimizer has already been "
                              "defined. Note that set_learning_rate can mutate "
                              "the value of the learning rate of the optimizer "
                              "only when the LRScheduler of the optimizer is "
                              "undefined.")
        v.check_scalar("lr", lr, low=0.0)
        self.lr = lr

    def set_lr_scale(self, args_lrscale):  # pylint: disable=unused-argument
        """[DEPRECATED] Sets lr scale. Use set_lr_mult instead."""
        raise DeprecationWarning

    def set_lr_mult(self, args_lr_mult):
        """Set per-parameter learning-rate multipliers, by name or index."""
        _check_mult_dict("args_lr_mult", args_lr_mult)
        self.lr_mult = {}
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and '__lr_mult__' in attr[name]:
                    self.lr_mult[name] = float(attr[name]['__lr_mult__'])
        self.lr_mult.update(args_lr_mult)

    def set_wd_mult(self, args_wd_mult):
        """Set per-parameter weight-decay multipliers, by name or index. With
        ``param_idx2name``, names not ending in ``_weight``/``_gamma`` default to 0."""
        _check_mult_dict("args_wd_mult", args_wd_mult)
        self.wd_mult = {}
        for n in self.idx2name.values():
            if not (n.endswith('_weight') or n.endswith('_gamma')):
                self.wd_mult[n] = 0.0
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and '__wd_mult__' in attr[name]:
                    self.wd_mult[name] = float(attr[name]['__wd_mult__'])
        self.wd_mult.update(args_wd_mult)

    def _set_current_context(self, device_id):
        if device_id not in self._all_index_update_counts:
            self._all_index_update_counts[device_id] = {}
        self._index_update_count = self._all_index_update_counts[device_id]

    def _update_count(self, index):
        if not isinstance(index, (list, tuple)):
            index = [index]
        for idx in index:
            if idx not in self._index_update_count:
                self._index_update_count[idx] = self.begin_num_update
            self._index_update_count[idx] += 1
            self.num_update = max(self._index_update_count[idx], self.num_update)

    def _get_lrs(self, indices):
        if self.lr_scheduler is not None:
            lr = self.lr_scheduler(self.num_update)
        else:
            lr = self.lr
        lrs = [lr for _ in indices]
        for i, index in enumerate(indices):
            if index in self.param_dict:
                lrs[i] *= self.param_dict[index].lr_mult
            elif index in self.lr_mult:
                lrs[i] *= self.lr_mult[index]
            elif index in self.idx2name:
                lrs[i] *= self.lr_mult.get(self.idx2name[index], 1.0)
        return lrs

    def _get_lr(self, index):
        return self._get_lrs([index])[0]

    def _get_wds(self, indices):
        wds = [self.wd for _ in indices]
        for i, index in enumerate(indices):
            if index in self.param_dict:
                wds[i] *= self.param_dict[index].wd_mult
            elif index in self.wd_mult:
                wds[i] *= self.wd_mult[index]
            elif index in self.idx2name:
                wds[i] *= self.wd_mult.get(self.idx2name[index], 1.0)
        return wds

    def _get_wd(self, index):
        return self._get_wds([index])[0]

    def __getstate__(self):
        ret = self.__dict__.copy()
        # As MXNet: param_dict is not saved; the trainer sets it again.
        del ret['param_dict']
        return ret

    def __setstate__(self, state):
        self.__dict__ = state
        self.param_dict = {}


register = Optimizer.register
create = Optimizer.create_optimizer


def _check_mult_dict(name, value):
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict from parameter name or index to float, "
                        f"got {type(value).__name__}")
    for key, mult in value.items():
        v.check_scalar(f"{name}[{key!r}]", mult, low=0.0)


def _as_array(name, x):
    if isinstance(x, (jax.Array, np.ndarray)):
        return jnp.asarray(x)
    raise TypeError(f"{name} must be a JAX or NumPy array, got {type(x).__name__}")


@functools.partial(jax.jit, static_argnames=("centered",))
def _rmsprop_step(weight, grad, state, hyper, *, centered):
    """One ``mxopt.rmsprop`` step on one weight; every hyperparameter is traced,
    so new values reuse the compiled step. A clip bound of 0 is off."""
    tx = alias.rmsprop(hyper["lr"], hyper["gamma1"], hyper["gamma2"], hyper["epsilon"],
                       centered, hyper["clip_weights"], wd=hyper["wd"],
                       rescale_grad=hyper["rescale_grad"],
                       clip_gradient=hyper["clip_gradient"])
    count = jnp.zeros([], jnp.int32)
    if centered:
        opt_state = alias.CenteredRMSPropState(count, *state)
    else:
        opt_state = alias.RMSPropState(count, *state)
    updates, opt_state = tx.update(grad, opt_state, weight)
    return optax.apply_updates(weight, updates), tuple(opt_state)[1:]


@register
class RMSProp(Optimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.RMSProp`` (both variants) on JAX arrays.

    ``centered=False``: Tieleman & Hinton, state ``(n,)``; ``centered=True``:
    Graves, state ``(n, g, delta)``. See :func:`mxopt.rmsprop` for the update
    rule; this class runs it. ``update`` returns ``(new_weight, new_state)``.

    Args:
      learning_rate, gamma1, gamma2, epsilon, centered, clip_weights: as in
        MXNet (and :func:`mxopt.rmsprop`).
      **kwargs: the :class:`Optimizer` arguments.
    """

    def __init__(self, learning_rate=0.001, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
                 centered=False, clip_weights=None, **kwargs):
        v.check_scalar("gamma1", gamma1, low=0.0, high=1.0, high_open=True)
        v.check_scalar("gamma2", gamma2, low=0.0, high=1.0, high_open=True)
        v.check_scalar("epsilon", epsilon, low=0.0)
        v.check_bool("centered", centered)
        v.check_scalar("clip_weights", clip_weights, low=0.0, allow_none=True)
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.gamma1 = gamma1
        self.gamma2 = gamma2
        self.centered = centered
        self.epsilon = epsilon
        self.clip_weights = clip_weights

    def create_state(self, index, weight):
        weight = _as_array("weight", weight)
        if self.centered:
            return (jnp.zeros_like(weight), jnp.zeros_like(weight), jnp.zeros_like(weight))
        return (jnp.zeros_like(weight),)

    def update(self, index, weight, grad, state):
        weight, grad = _as_array("weight", weight), _as_array("grad", grad)
        if grad.shape != weight.shape or grad.dtype != weight.dtype:
            raise ValueError(f"index {index!r}: grad {grad.shape} {grad.dtype} does not match "
                             f"weight {weight.shape} {weight.dtype}")
        expected = 3 if self.centered else 1
        if not isinstance(state, (tuple, list)) or len(state) != expected:
            raise ValueError(f"index {index!r}: state must be a tuple of {expected} arrays "
                             f"(from create_state), got {type(state).__name__}")
        self._update_count(index)
        lr = self._get_lr(index)
        wd = self._get_wd(index)
        # MXNet hands the kernel float32 parameters; None switches a clip off.
        hyper = {name: np.float32(value) for name, value in dict(
            lr=lr, wd=wd, gamma1=self.gamma1, gamma2=self.gamma2, epsilon=self.epsilon,
            rescale_grad=self.rescale_grad,
            clip_gradient=self.clip_gradient if self.clip_gradient else 0.0,
            clip_weights=self.clip_weights if self.clip_weights else 0.0).items()}
        state = tuple(jnp.asarray(s) for s in state)
        return _rmsprop_step(weight, grad, state, hyper, centered=bool(self.centered))


class Updater:
    """MXNet's ``Updater``: creates states on first sight of an index and
    updates. ``__call__(index, grad, weight)`` returns the new weight (a list for
    a list of indices). ``optimizer`` and ``states`` are plain attributes, as
    Gluon's Trainer expects."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an mxopt.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.states = {}
        self.states_synced = {}
        self.aggregate_updates = optimizer.aggregate_num > 0

    def __call__(self, index, grad, weight):
        if not isinstance(index, (list, tuple)):
            return self._update_one(index, grad, weight)
        if not (len(index) == len(grad) == len(weight)):
            raise ValueError("index, grad and weight lists must have the same length")
        return [self._update_one(i, g, w) for i, g, w in zip(index, grad, weight)]

    def _update_one(self, index, grad, weight):
        if isinstance(index, bytes):
            index = index.decode()
        if index not in self.states:
            self.states[index] = self.optimizer.create_state_multi_precision(index, weight)
            self.states_synced[index] = True
        new_weight, self.states[index] = self.optimizer.update_multi_precision(
            index, weight, grad, self.states[index])
        return new_weight

    def get_states(self, dump_optimizer=False):
        """Pickle the states (NumPy arrays), with the optimizer if asked."""
        states = jax.tree.map(np.asarray, self.states)
        return pickle.dumps((states, self.optimizer) if dump_optimizer else states)

    def set_states(self, states):
        """Restore from :meth:`get_states` bytes, or from MXNet 1.9.1's own
        (``Updater.get_states`` / ``Trainer.save_states`` files, read with
        :mod:`mxopt.interop`'s restricted reader; a pickled MXNet RMSProp becomes an
        :class:`RMSProp` with its counts, multipliers and scheduler). Only known
        classes are rebuilt: NumPy arrays, plain containers, registered optimizers
        and :mod:`mxopt.lr_scheduler` schedulers; anything else is refused."""
        if not isinstance(states, (bytes, bytearray)):
            raise TypeError(f"set_states expects bytes from get_states, got "
                            f"{type(states).__name__}")
        if _MXNET_PICKLE_MARK in states:
            self._set_mxnet_states(bytes(states))
            return
        loaded = _RestrictedUnpickler(io.BytesIO(states)).load()
        if isinstance(loaded, tuple) and len(loaded) == 2:
            states, optimizer = loaded
            if not isinstance(optimizer, Optimizer):
                raise TypeError("the pickled optimizer is not an mxopt.Optimizer")
            self.optimizer = optimizer
        else:
            states = loaded
        if not isinstance(states, dict):
            raise TypeError(f"the pickled states must be a dict, got {type(states).__name__}")
        self.states = jax.tree.map(jnp.asarray, states)
        self.states_synced = dict.fromkeys(self.states.keys(), False)


def _set_mxnet_states_impl(updater, data):
    from mxopt import interop  # noqa: PLC0415 (interop imports the alias module)
    loaded = interop.loads_states(data)
    if loaded.optimizer is not None:
        updater.optimizer = interop.optimizer_from_mxnet(loaded.optimizer)
    updater.states = interop.updater_states_from_mxnet(loaded)
    updater.states_synced = dict.fromkeys(updater.states.keys(), False)


Updater._set_mxnet_states = _set_mxnet_states_impl

# Every MXNet pickle names its NDArray or optimizer classes by module.
_MXNET_PICKLE_MARK = b"mxnet."


def get_updater(optimizer):
    """Return an :class:`Updater` for ``optimizer``."""
    return Updater(optimizer)


_SAFE_GLOBALS = {
    ("builtins", name) for name in (
        "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool",
        "str", "bytes", "bytearray", "slice", "range")
} | {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only plain data, NumPy arrays, registered optimizer classes and
    mxopt's LR schedulers; refuses every other global before it is touched."""

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        for klass in Optimizer.opt_registry.values():
            if klass.__module__ == module and klass.__qualname__ == name:
                return klass
        if module == "mxopt.lr_scheduler":
            from mxopt import lr_scheduler  # noqa: PLC0415 (optional until imported)
            klass = getattr(lr_scheduler, name, None)
            if isinstance(klass, type):
                return klass
        if module == "ml_dtypes" and name in ("bfloat16",):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: mxopt's "
                                     f"set_states rebuilds only states and known optimizers")
