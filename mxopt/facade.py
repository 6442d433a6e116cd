"""MXNet 1.9.1's optimizer class API on JAX arrays, for porting MXNet code.

``mxopt.RMSProp``, ``mxopt.Optimizer``, the registry (``mxopt.create``,
``mxopt.register``) and ``mxopt.Updater`` / ``mxopt.get_updater`` behave as
``mxnet.optimizer``'s, method for method, with one documented difference: JAX
arrays are immutable, so ``update`` and ``update_multi_precision`` return
``(new_weight, new_state)`` and ``Updater.__call__`` returns the new weight.

Porting MXNet code, keep what ``update`` returns: MXNet mutates the weight in
place, JAX cannot, so a loop that drops the result trains nothing. mxopt warns
(once per optimizer) when an index is updated again with the very weight object it
was given last time::

    updater(i, grad, weight)                            # MXNet: weight changes in place
    weight = updater(i, grad, weight)                   # mxopt
    optimizer.update(i, weight, grad, state)            # MXNet
    weight, state = optimizer.update(i, weight, grad, state)   # mxopt

The arithmetic is not reimplemented here: each ``update`` runs the class's
kernel of :mod:`mxopt._kernels` (the functional form's) for one step inside a
cached ``jax.jit`` call whose hyperparameters (learning rate after scheduler
and multiplier, weight decay, ...) are arguments, so changing them never
recompiles. The Python side (update counts, scheduler calls,
``lr_mult``/``wd_mult`` lookup through ``param_dict``, index and name, list
calls) follows MXNet's code line for line, and the state layout is MXNet's as
``mxopt._mxformat.OPTIMIZER_FORMATS`` records it.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import numbers
import pickle
import warnings
import weakref
from typing import Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mxopt import _kernels as K
from mxopt import _mxformat as _fmt
from mxopt import _validation as v
from mxopt import alias, lr_scheduler, multipliers
from mxopt._mxnumbers import received_float, scalar_operand, tuple_float
from mxopt.precision import LOW_PRECISION_DTYPES

__all__ = ["Optimizer", "RMSProp", "SGD", "NAG", "Signum", "AdaGrad", "AdaDelta", "Adam",
           "Adamax", "Nadam", "Ftrl", "FTML", "ccSGD", "Test", "DCASGD", "SGLD", "GroupAdaGrad",
           "LBSGD", "Updater", "create", "register", "get_updater",
           "optimizer_from_mxnet", "optimizer_to_mxnet", "updater_states_from_mxnet"]
__all__ += ["LARS", "LAMB"]

# The attributes Optimizer.__init__ sets, all of which its pickles hold.
_OPTIMIZER_FIELDS = frozenset({
    "rescale_grad", "lr_scheduler", "lr", "wd", "lr_mult", "wd_mult", "begin_num_update",
    "num_update", "_all_index_update_counts", "_index_update_count", "clip_gradient",
    "multi_precision", "aggregate_num", "idx2name", "sym_info"})


def _check_settings(rescale_grad, wd, clip_gradient, learning_rate, lr_scheduler,
                    begin_num_update, multi_precision, param_idx2name, sym):
    """The rules of Optimizer's arguments (constructor and unpickling)."""
    v.check_scalar("rescale_grad", rescale_grad, low=0.0, low_open=True)
    v.check_scalar("wd", wd, low=0.0)
    v.check_scalar("clip_gradient", clip_gradient, low=0.0, allow_none=True)
    v.check_scalar("learning_rate", learning_rate, low=0.0, allow_none=True)
    if lr_scheduler is not None and not callable(lr_scheduler):
        raise TypeError(f"lr_scheduler must be callable (num_update -> lr), "
                        f"got {type(lr_scheduler).__name__}")
    _check_count("begin_num_update", begin_num_update)
    v.check_bool("multi_precision", multi_precision)
    if not isinstance(param_idx2name, dict):
        raise TypeError("param_idx2name should be a dict of param indexes to names.")
    if sym is not None and not isinstance(sym, Mapping):
        raise TypeError("sym must be a mapping from parameter name to its attribute "
                        "dict, e.g. {'fc1_weight': {'__lr_mult__': '2'}}")


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


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
        if param_idx2name is None:
            param_idx2name = {}
        _check_settings(rescale_grad, wd, clip_gradient, learning_rate, lr_scheduler,
                        begin_num_update, multi_precision, param_idx2name, sym)

        self.rescale_grad = rescale_grad
        self.lr_scheduler = lr_scheduler
        if self.lr_scheduler is None and learning_rate is None:
            learning_rate = 0.01
        self.lr = learning_rate
        if self.lr_scheduler is not None and learning_rate is not None:
            if self.lr_scheduler.base_lr != learning_rate:
                # MXNet prints this; a warning can be filtered. The run stays MXNet's.
                warnings.warn(f"learning rate from ``lr_scheduler`` has been overwritten by "
                              f"``learning_rate`` in optimizer (base_lr "
                              f"{self.lr_scheduler.base_lr!r} -> {learning_rate!r}); pass "
                              f"learning_rate equal to the scheduler's base_lr to keep it",
                              UserWarning, stacklevel=v.caller_stacklevel())
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
        self._dropped = _DroppedResultCheck()
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
        raise ValueError(f"Cannot find optimizer {name}: the registered optimizers are "
                         f"{sorted(Optimizer.opt_registry)} (names are case-insensitive; "
                         f"mxopt.register adds a class)")

    @property
    def learning_rate(self):
        if self.lr_scheduler is not None:
            return self.lr_scheduler(self.num_update)
        return self.lr

    def create_state(self, index, weight):
        """Create the auxiliary state of one weight."""

    # Where the state of a float16 (or bfloat16) weight keeps its float32 master
    # under multi_precision: first, ``(master, inner state)``, as MXNet's base
    # class does, or last, ``(inner state, master)``, as MXNet's fused
    # mixed-precision kernels (SGD, NAG) do.
    _master_at = 0

    def _mp_state(self, master, inner):
        return (master, inner) if self._master_at == 0 else (inner, master)

    def create_state_multi_precision(self, index, weight):
        """Create the state, with a float32 master copy (first, or last where
        MXNet's kernel keeps it there) for a float16 (or bfloat16) weight when
        ``multi_precision`` is on."""
        weight = _as_array("weight", weight)
        if self.multi_precision and weight.dtype in LOW_PRECISION_DTYPES:
            master = weight.astype(jnp.float32)
            return self._mp_state(master, self.create_state(index, master))
        if weight.dtype in LOW_PRECISION_DTYPES and not self.multi_precision:
            warnings.warn("Accumulating with float16 in optimizer can lead to "
                          "poor accuracy or slow convergence. "
                          "Consider using multi_precision=True option of the "
                          "optimizer", stacklevel=v.caller_stacklevel())
        return self.create_state(index, weight)

    def update(self, index, weight, grad, state):
        """Update one weight; returns ``(new_weight, new_state)``."""
        raise NotImplementedError()

    def update_multi_precision(self, index, weight, grad, state):
        """:meth:`update`, on the float32 master copy when ``multi_precision`` is on
        and the weight is float16 (or bfloat16); returns ``(new_weight, new_state)``."""
        with self._dropped.outer():
            out = self._update_multi_precision(index, weight, grad, state)
        if not isinstance(index, (list, tuple)):  # a list call is noted by its caller
            self._dropped.note(self, index, weight, "weight, state = optimizer."
                               "update_multi_precision(index, weight, grad, state)")
        return out

    def _update_multi_precision(self, index, weight, grad, state):
        weight = _as_array("weight", weight)
        if not (self.multi_precision and weight.dtype in LOW_PRECISION_DTYPES):
            return self.update(index, weight, grad, state)
        master, inner = self._split_master(index, weight, state)
        master, inner = self.update(index, master, _as_array("grad", grad).astype(jnp.float32),
                                    inner)
        return master.astype(weight.dtype), self._mp_state(master, inner)

    def _split_master(self, index, weight, state):
        """``(float32 master, inner state)`` of a multi_precision state, checked."""
        at = self._master_at
        if not (isinstance(state, (tuple, list)) and len(state) == 2
                and isinstance(state[at], (jax.Array, np.ndarray))
                and state[at].dtype == jnp.float32 and state[at].shape == weight.shape):
            layout = self._mp_state("float32 master copy of that shape", "inner state")
            raise ValueError(
                f"index {index!r}: the optimizer state does not match: multi_precision with "
                f"a {weight.dtype} weight of shape {weight.shape} expects ({', '.join(layout)}), "
                f"MXNet's layout for {type(self).__name__}, got {_describe_state(state)}; "
                f"create it with create_state_multi_precision(index, weight)")
        return jnp.asarray(state[at]), state[1 - at]

    def set_learning_rate(self, lr):
        """Set the learning rate; a UserWarning is raised when a scheduler is set."""
        if self.lr_scheduler is not None:
            raise UserWarning("LRScheduler of the optimizer has already been "
                              "defined. Note that set_learning_rate can mutate "
                              "the value of the learning rate of the optimizer "
                              "only when the LRScheduler of the optimizer is "
                              "undefined. Change the scheduler instead (e.g. "
                              "optimizer.lr_scheduler.base_lr = lr).")
        v.check_scalar("lr", lr, low=0.0)
        self.lr = lr

    def set_lr_scale(self, args_lrscale):  # pylint: disable=unused-argument
        """[DEPRECATED] Sets lr scale. Use set_lr_mult instead."""
        raise DeprecationWarning("set_lr_scale is deprecated (and raises, as in MXNet): "
                                 "use set_lr_mult({name or index: multiplier}) instead")

    def set_lr_mult(self, args_lr_mult):
        """Set per-parameter learning-rate multipliers, by name or index."""
        _check_mult_dict("args_lr_mult", args_lr_mult)
        self.lr_mult = {}
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and '__lr_mult__' in attr[name]:
                    self.lr_mult[name] = float(attr[name]['__lr_mult__'])
        self._warn_unmatched("args_lr_mult", args_lr_mult)
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
        self._warn_unmatched("args_wd_mult", args_wd_mult)
        self.wd_mult.update(args_wd_mult)

    def _warn_unmatched(self, argname, mults):
        """Warn about names that match no known parameter (MXNet ignores them, and
        porting code often lists frozen parameters too, so this is no error)."""
        names = list(self.idx2name.values())
        if self.sym_info:
            names += [n for n in self.sym_info[1] if n not in names]
        if not names:
            return  # no parameter names known: a name may be an index
        unmatched = [k for k in mults if isinstance(k, str) and k not in names
                     and k not in self.idx2name]
        if unmatched:
            warnings.warn(multipliers.unmatched_names_message(argname, unmatched, names)
                          + "; MXNet ignores such names and so does this optimizer",
                          UserWarning, stacklevel=v.caller_stacklevel())

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

    def _repr_fields(self):
        """``(name, value)`` of the hyperparameters :meth:`__repr__` shows."""
        return [("learning_rate", self.lr), ("lr_scheduler", self.lr_scheduler),
                ("wd", self.wd), ("rescale_grad", self.rescale_grad),
                ("clip_gradient", self.clip_gradient),
                ("multi_precision", self.multi_precision),
                ("begin_num_update", self.begin_num_update)]

    def __repr__(self):
        fields = ", ".join(f"{k}={val!r}" for k, val in self._repr_fields())
        return f"{type(self).__name__}({fields})"

    def __getstate__(self):
        ret = self.__dict__.copy()
        # As MXNet: param_dict is not saved; the trainer sets it again.
        del ret['param_dict']
        ret.pop('_dropped', None)
        return ret

    def __setstate__(self, state):
        """Restore a pickled optimizer, checking its fields with the constructor's
        rules (a corrupted pickle fails here, naming the field, not at the next
        update)."""
        if not isinstance(state, dict):
            raise TypeError(f"a pickled {type(self).__name__} holds a dict of attributes, got "
                            f"{type(state).__name__}")
        missing = _OPTIMIZER_FIELDS - set(state)
        if missing:
            raise ValueError(f"the pickled {type(self).__name__} lacks the attributes "
                             f"{sorted(missing)}")
        sym = state["sym_info"]
        if sym != () and not (isinstance(sym, tuple) and len(sym) == 2
                              and isinstance(sym[0], dict) and isinstance(sym[1], list)):
            raise ValueError(f"the pickled {type(self).__name__}'s sym_info is not "
                             f"() or (attr dict, argument names)")
        _check_settings(state["rescale_grad"], state["wd"], state["clip_gradient"],
                        state["lr"], state["lr_scheduler"], state["begin_num_update"],
                        state["multi_precision"], state["idx2name"], None)
        _check_count("num_update", state["num_update"])
        _check_mult_dict("lr_mult", state["lr_mult"])
        _check_mult_dict("wd_mult", state["wd_mult"])
        counts = state["_all_index_update_counts"]
        if not isinstance(counts, dict) or not all(isinstance(c, dict)
                                                   for c in counts.values()):
            raise TypeError("_all_index_update_counts must be a dict of device -> "
                            "{index: count}")
        for device in counts.values():
            for index, count in device.items():
                _check_count(f"the update count of index {index!r}", count)
        if not any(state["_index_update_count"] is c for c in counts.values()):
            raise ValueError("_index_update_count must be one of _all_index_update_counts")
        self.__dict__ = state
        self.param_dict = {}
        self._dropped = _DroppedResultCheck()


register = Optimizer.register
create = Optimizer.create_optimizer


def _check_mult_dict(name, value):
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict from parameter name or index to float, "
                        f"got {type(value).__name__}")
    for key, mult in value.items():
        v.check_scalar(f"{name}[{key!r}]", mult, low=0.0)


def _describe_state(state):
    if isinstance(state, (jax.Array, np.ndarray)):
        return f"an array {state.dtype}{list(state.shape)}"
    if isinstance(state, (tuple, list)):
        inner = ", ".join(_describe_state(x) for x in state)
        return f"({inner})" if isinstance(state, tuple) else f"[{inner}]"
    return type(state).__name__


class _DroppedResultCheck:
    """Detects the in-place trap: an index updated again with the very weight object
    it was given last time, i.e. the returned weight was dropped. Each entry point
    notes the weight it was given once its arguments passed their checks. Holds
    weak references only, so it keeps no parameter array alive, and warns once."""

    def __init__(self):
        self.last = {}
        self.warned = False
        self.depth = 0

    @contextlib.contextmanager
    def outer(self):
        """Inside an entry point that notes the weight itself, inner ones do not."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def note(self, optimizer, index, weight, fix):
        if self.depth:
            return
        key = (fix, index)  # each entry point (Updater, update, ...) on its own
        ref = self.last.get(key)
        if ref is not None and ref() is weight and not self.warned:
            self.warned = True
            name = optimizer.idx2name.get(index)
            what = f"parameter {name!r} (index {index!r})" if name else f"index {index!r}"
            warnings.warn(
                f"{what} was updated again with the very weight array it was given last "
                f"time: JAX arrays are immutable, so the new weight is returned, and a loop "
                f"that drops it trains nothing (warned once per optimizer). Keep the "
                f"result: `{fix}`", UserWarning, stacklevel=v.caller_stacklevel())
        try:
            self.last[key] = weakref.ref(weight)
        except TypeError:  # not weak-referenceable: not checked, nothing kept alive
            self.last.pop(key, None)


def _as_array(name, x):
    if isinstance(x, (jax.Array, np.ndarray)):
        return jnp.asarray(x)
    raise TypeError(f"{name} must be a JAX or NumPy array, got {type(x).__name__}")


@functools.partial(jax.jit,
                   static_argnames=("kernel", "static", "rebuild", "gives_weight"))
def _kernel_step(weight, grad, state, hyper, *, kernel, static=(), rebuild=None,
                 gives_weight=False):
    """One step of a per-leaf kernel of :mod:`mxopt._kernels` on one weight, with
    every numeric hyperparameter traced (already as MXNet's kernel receives it),
    so new values reuse the compiled step; ``static`` holds the ``(name, value)``
    pairs that choose code paths (Python bools, strings and None: a clip bound
    of None is off), compiled once per combination. A ``clip_weights`` entry
    (RMSProp) clips the new weight. Where ``weight + update`` could miss the
    weight MXNet writes by an ulp, the step returns that weight itself:
    ``rebuild(*state, hyper)`` (Ftrl, FTML) rebuilds it from the new state;
    ``gives_weight`` (NAG) means the kernel's first result is it."""
    hyper = dict(hyper, **dict(static))
    clip_weights = hyper.pop("clip_weights", None)
    update, *state = kernel(grad, weight, *state, hyper, None)
    if gives_weight:
        return update, tuple(state)
    if rebuild is not None:
        return rebuild(*state, hyper).astype(weight.dtype), tuple(state)
    if clip_weights is not None:
        update = K.clipped_weight_update(weight, update, clip_weights)
    return optax.apply_updates(weight, update), tuple(state)


class _KernelOptimizer(Optimizer):
    """An MXNet optimizer class whose ``update`` is MXNet's Python side on the
    host (counts, rates and decays per index, bias corrections, ``m_schedule``,
    LARS's momentum correction, in float64 as MXNet computes them), then one
    kernel of :mod:`mxopt._kernels` per weight, run by :func:`_kernel_step`.
    Each scalar reaches the kernel as MXNet's operator receives it: a C++
    ``float`` field parsed by ``dmlc::stof``; for the names in ``_operands``, an
    NDArray scalar operand (a double cast to the weight's dtype); for those in
    ``_tuple_fields``, a ``Tuple<float>`` entry.

    MXNet's state layout (single buffers bare or not, where the float32 master
    sits under ``multi_precision``, None slots), the clip rule, the own
    arguments and whether ``update`` takes a list of indices are the class's
    entry of :data:`mxopt._mxformat.OPTIMIZER_FORMATS` (``_format``, found by
    class name), written once for the class form and the interop.

    ``update`` and ``update_multi_precision`` take an index, or, where MXNet's
    do (the classes with an ``aggregate_num``: SGD, LARS, LAMB), a list of
    indices with lists of weights, gradients and states, and then return two
    lists. Under ``multi_precision`` the kernel runs on the float32 master and
    learns the stored dtype (a static ``stored_dtype``: LARS's and LAMB's norms
    round as the stored weight does).

    A subclass names its kernel (``_kernel``, ``_momentum_kernels`` or
    :meth:`_kernel_for`), its state buffers (``_states`` or
    :meth:`_state_names`) and the kernel's hyperparameters
    (:meth:`_host_hyper`); the rules of its own arguments are its functional
    form's checks (the table's ``alias``).
    """

    _format: _fmt.OptimizerFormat  # set per class from OPTIMIZER_FORMATS
    _kernel = None
    _momentum_kernels = None  # (with, without): momentum != 0 picks the first and a buffer mom
    _states = ()
    _operands = frozenset()
    _tuple_fields = frozenset()
    _reads_lr = True         # False: the rate (and scheduler) is never read (AdaDelta)
    _float32_state = False   # MXNet's state is float32: float16/bfloat16 weights are refused
    _rate_divides = False    # lr 0 gives NaN in MXNet: refused
    _rebuild = None          # the new weight from the new state (Ftrl, FTML)
    _gives_weight = False    # the kernel gives the new weight, not an update (NAG)
    _single_call = False     # during update: whether the call names one index (not a list)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fmt = _fmt.OPTIMIZER_FORMATS.get(cls.__name__) if cls.__module__ == __name__ else None
        if fmt is not None:  # a subclass elsewhere keeps its parent's layout
            cls._format = fmt

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # MXNet's list-taking classes set it (SGD's MXNET_OPTIMIZER_AGGREGATION_SIZE).
        self.aggregate_num = self._format.aggregate_num

    @property
    def _master_at(self):
        return 1 if self._format.master_last else 0

    @classmethod
    def _own(cls):
        """Functional-form keyword -> attribute of the class's own arguments."""
        fmt = cls._format
        own = {kw: attr for kw, attr, _ in fmt.own if kw is not None}
        return dict(own, **{name: name for name in fmt.caller + fmt.restored})

    @classmethod
    def _extra(cls):
        """MXNet's other attributes of the class (kept, pickled and checked)."""
        return tuple(attr for kw, attr, _ in cls._format.own if kw is None)

    def _own_values(self):
        return {arg: getattr(self, attr) for arg, attr in self._own().items()}

    def _check_own(self):
        # The functional form's checks are the rules of these arguments.
        getattr(alias, self._format.alias)(**self._own_values())

    def _kernel_for(self):
        if self._momentum_kernels is not None:
            return self._momentum_kernels[0 if self.momentum != 0.0 else 1]
        return self._kernel

    def _state_names(self):
        if self._momentum_kernels is not None:
            return ("mom",) if self.momentum != 0.0 else ()
        return self._states

    def _host_hyper(self, index, lr, wd, t):
        """The kernel's hyperparameters as MXNet's Python side computes them."""
        raise NotImplementedError

    def _repr_fields(self):
        base = super()._repr_fields()  # learning_rate first
        order = list(inspect.signature(type(self).__init__).parameters)
        own = sorted(self._own_values().items(),
                     key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        # Per-parameter stores (DCASGD's weight_previous, LBSGD's cumgrads) are no
        # hyperparameters: not shown.
        extra = [(name, getattr(self, name)) for name in self._extra()
                 if not isinstance(getattr(self, name), dict)]
        return base[:1] + own + extra + base[1:]

    def __setstate__(self, state):
        super().__setstate__(state)
        missing = (set(self._own().values()) | set(self._extra())) - set(state)
        if missing:
            raise ValueError(f"the pickled {type(self).__name__} lacks the attributes "
                             f"{sorted(missing)}")
        self._check_own()

    def _refuse_low_precision(self, index, weight):
        if self._float32_state and weight.dtype in LOW_PRECISION_DTYPES:
            raise TypeError(f"index {index!r}: {type(self).__name__} keeps its state in "
                            f"float32 only, as MXNet does (which refuses a {weight.dtype} "
                            f"weight): pass multi_precision=True for float32 master weights, "
                            f"or train the weight in float32")

    def create_state_multi_precision(self, index, weight):
        weight = _as_array("weight", weight)
        if not self.multi_precision:  # refused before the base class's warning
            self._refuse_low_precision(index, weight)
        return super().create_state_multi_precision(index, weight)

    def create_state(self, index, weight):
        weight = _as_array("weight", weight)
        self._refuse_low_precision(index, weight)
        return self._pack(tuple(self._fresh_buffer(index, name, weight)
                                for name in self._state_names()))

    def _fresh_buffer(self, index, name, weight):  # pylint: disable=unused-argument
        """A new state buffer ``name`` for ``weight`` (zeros like it, unless a
        subclass's MXNet state is another shape or dtype)."""
        return jnp.zeros_like(weight)

    def _pack(self, buffers, master=None):
        """Buffers (and the float32 master) as MXNet keeps them."""
        return self._format.entry(buffers, master)

    def _buffers(self, index, weight, state):
        """``state`` (MXNet's layout, without the master) as a tuple of buffers,
        after checking it."""
        names = self._state_names()
        fresh = [jax.eval_shape(functools.partial(self._fresh_buffer, index, name), weight)
                 for name in names]
        made_by = (f"create_state(index, weight) of {self!r} makes {self._format.layout(names)}"
                   + (f", like the weight, {weight.dtype}{list(weight.shape)}"
                      if all(f.shape == weight.shape and f.dtype == weight.dtype for f in fresh)
                      else ", " + ", ".join(f"{f.dtype}{list(f.shape)}" for f in fresh)))
        buffers = self._format.split(state, len(names),
                                     lambda s: isinstance(s, (jax.Array, np.ndarray)))
        if buffers is None:
            raise ValueError(f"index {index!r}: the optimizer state does not match: got "
                             f"{_describe_state(state)}{self._other_layout(state)}; {made_by}")
        for name, s, want in zip(names, buffers, fresh):
            if s.shape != want.shape or s.dtype != want.dtype:
                raise ValueError(f"index {index!r}: the optimizer state does not match: "
                                 f"state {name} is {s.dtype}{list(s.shape)}, the weight "
                                 f"{weight.dtype}{list(weight.shape)}; {made_by}")
        return tuple(jnp.asarray(s) for s in buffers)

    def _other_layout(self, state):  # pylint: disable=unused-argument
        """A hint naming the setting whose state ``state`` is, if any."""
        return ""

    def update(self, index, weight, grad, state):
        return self._apply(index, weight, grad, state, False,
                           "weight, state = optimizer.update(index, weight, grad, state)")

    def _update_multi_precision(self, index, weight, grad, state):
        first = weight[0] if isinstance(index, (list, tuple)) and weight else weight
        mp = self.multi_precision and _as_array("weight", first).dtype in LOW_PRECISION_DTYPES
        return self._apply(index, weight, grad, state, mp, None)

    def _apply(self, index, weight, grad, state, mp, fix):
        """MXNet's ``update`` (``mp``: ``update_multi_precision`` on a float16
        weight) of one index or a list of them; ``fix``: the call the dropped-result
        warning suggests, None where the caller notes the weight."""
        single = not isinstance(index, (list, tuple))
        if single:
            calls = [(index, weight, grad, state)]
        else:
            if not self._format.aggregate_num:
                takes = sorted(n for n, f in _fmt.OPTIMIZER_FORMATS.items() if f.aggregate_num)
                raise TypeError(
                    f"index is a {type(index).__name__}, but MXNet's {type(self).__name__} "
                    f"updates one index per call (of MXNet's optimizers only "
                    f"{', '.join(takes)} take a list of indices): update each index in "
                    f"turn, or let an mxopt.Updater do it")
            if not all(isinstance(x, (list, tuple)) and len(x) == len(index)
                       for x in (weight, grad, state)):
                raise ValueError("index, weight, grad and state lists must have the same "
                                 "length")
            calls = list(zip(index, weight, grad, state))
        checked = [self._checked(*call, mp) for call in calls]
        if single and fix is not None:
            self._dropped.note(self, index, weight, fix)
        rates = self._rates([i for i, *_ in calls])
        new_weights, new_states = [], []
        # Whether this call names one index (not a list), for the hooks of an
        # optimizer whose MXNet runs other operators then (LAMB); never pickled.
        self._single_call = single
        try:
            for (i, *_), (stored, master, g, buffers), (lr, wd, t) in zip(calls, checked,
                                                                           rates):
                x, buffers = self._run(i, stored if master is None else master, g, buffers,
                                       lr, wd, t, stored.dtype)
                new_weights.append(x if master is None else x.astype(stored.dtype))
                new_states.append(self._pack(buffers, None if master is None
                                             else self._new_master(master, x)))
        finally:
            del self._single_call
        if single:
            return new_weights[0], new_states[0]
        return new_weights, new_states

    def _new_master(self, master, new):  # pylint: disable=unused-argument
        """The float32 master a multi_precision step leaves: the new weight."""
        return new

    def _checked(self, index, weight, grad, state, mp):
        """``(weight, float32 master or None, grad as the kernel takes it, buffers)``
        of one index, after checking them."""
        weight, grad = _as_array("weight", weight), _as_array("grad", grad)
        if grad.shape != weight.shape or grad.dtype != weight.dtype:
            raise ValueError(f"index {index!r}: grad {grad.shape} {grad.dtype} does not match "
                             f"weight {weight.shape} {weight.dtype}")
        master = None
        if mp:
            master, state = self._split_master(index, weight, state)
            grad = grad.astype(jnp.float32)
        run = weight if master is None else master
        self._refuse_low_precision(index, run)
        return weight, master, grad, self._buffers(index, run, state)

    def _rates(self, indices):
        """``(lr, wd, t)`` of each index, as MXNet's Python side reads them in one
        call: every index counted, then the rates and decays read (for a list,
        SGD's and LARS's ``_update_impl``)."""
        counts = (dict(self._index_update_count), self.num_update)
        if self._format.counts:
            self._update_count(indices)
        lrs = self._get_lrs(indices) if self._reads_lr else [None] * len(indices)
        wds = self._get_wds(indices)
        if self._rate_divides and 0 in lrs:
            # Refused before anything changed: the count is put back.
            self._index_update_count.clear()
            self._index_update_count.update(counts[0])
            self.num_update = counts[1]
            index = indices[lrs.index(0)]
            raise ValueError(f"index {index!r}: the learning rate is 0 (after lr_mult), which "
                             f"{type(self).__name__} divides by: MXNet makes the weight NaN. "
                             f"Use a rate > 0, or leave the parameter out of the update")
        ts = [self._index_update_count.get(i, self.begin_num_update) for i in indices]
        return list(zip(lrs, wds, ts))

    def _run(self, index, weight, grad, buffers, lr, wd, t, stored_dtype):
        """One kernel step of one weight (the float32 master under
        multi_precision, stored as ``stored_dtype``): ``(new weight, buffers)``."""
        hyper = dict(self._host_hyper(index, lr, wd, t), rescale_grad=self.rescale_grad)
        # A kernel optimizer's 0 is off, as None (a traced bound: new values reuse
        # the step); MXNet's Python-side optimizers clip to 0.
        hyper["clip_gradient"] = (self.clip_gradient if (self._format.python_clip
                                                          or self.clip_gradient) else 0.0)
        static = {"stored_dtype": jnp.dtype(stored_dtype).name}
        traced = {}
        for name, value in hyper.items():
            if value is None or isinstance(value, (bool, str)):
                static[name] = value
            else:
                traced[name] = self._received(name, value, weight.dtype)
        return _kernel_step(weight, grad, buffers, traced, kernel=self._kernel_for(),
                            static=tuple(sorted(static.items())), rebuild=self._rebuild,
                            gives_weight=self._gives_weight)

    def _received(self, name, value, dtype):
        if isinstance(value, np.floating):  # computed as the kernel does (FTML's powf)
            return jnp.asarray(value)
        if name in self._operands:
            return jnp.asarray(scalar_operand(value, dtype))
        if name in self._tuple_fields:
            return jnp.asarray(tuple_float(value))
        return jnp.asarray(received_float(value))


@register
class RMSProp(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.RMSProp`` (both variants) on JAX arrays.

    ``centered=False``: Tieleman & Hinton, state ``(n,)``; ``centered=True``:
    Graves, state ``(n, g, delta)``. See :func:`mxopt.rmsprop` for the update
    rule; this class runs its kernel. ``update`` returns ``(new_weight, new_state)``.

    Args:
      learning_rate, gamma1, gamma2, epsilon, centered, clip_weights: as in
        MXNet (and :func:`mxopt.rmsprop`).
      **kwargs: the :class:`Optimizer` arguments.
    """

    def __init__(self, learning_rate=0.001, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
                 centered=False, clip_weights=None, **kwargs):
        self.gamma1, self.gamma2, self.epsilon = gamma1, gamma2, epsilon
        self.centered, self.clip_weights = centered, clip_weights
        self._check_own()
        super().__init__(learning_rate=learning_rate, **kwargs)

    def _kernel_for(self):
        return K.rmspropalex_update if self.centered else K.rmsprop_update

    def _state_names(self):
        return ("n", "g", "delta") if self.centered else ("n",)

    def _other_layout(self, state):
        if isinstance(state, (tuple, list)) and len(state) in (1, 3) and (
                (len(state) == 3) != bool(self.centered)):
            return f" (a state of RMSProp(centered={len(state) == 3}))"
        return ""

    def _host_hyper(self, index, lr, wd, t):
        # clip_weights 0 is off, as None (a traced bound: new values reuse the step).
        return dict(lr=lr, wd=wd, gamma1=self.gamma1, gamma2=self.gamma2,
                    epsilon=self.epsilon, clip_weights=self.clip_weights or 0.0)


@register
class SGD(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.SGD`` on JAX arrays: :func:`mxopt.sgd`'s
    arithmetic (``multi_sgd_mom_update`` / ``multi_sgd_update``). State: ``mom``
    (like the weight) or None with ``momentum=0``; ``(mom | None, master)`` for a
    float16/bfloat16 weight under ``multi_precision``, as MXNet's fused kernels
    (``multi_mp_sgd_*``) keep it, the reverse of the base class's order.

    Args:
      momentum: as in MXNet (buffer only when != 0).
      lazy_update: accepted; it matters only for MXNet's row_sparse arrays.
      **kwargs: the :class:`Optimizer` arguments (learning rate 0.01 by default).
    """

    _momentum_kernels = (K.sgd_mom_update, K.multi_sgd_update)
    _tuple_fields = frozenset({"lr", "wd"})  # multi_sgd_*'s lrs/wds: Tuple<float>

    def __init__(self, momentum=0.0, lazy_update=True, **kwargs):
        self.momentum, self.lazy_update = momentum, lazy_update
        self._check_own()
        super().__init__(**kwargs)

    def _host_hyper(self, index, lr, wd, t):
        return dict(lr=lr, wd=wd, momentum=self.momentum)


@register
class NAG(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.NAG``: :func:`mxopt.nag`'s arithmetic
    (``nag_mom_update``, ``sgd_update`` with ``momentum=0``), including the
    buffer's decay reading the updated weight. It writes MXNet's new weight
    itself (not ``w + update``: see :func:`mxopt.nag`), so it is MXNet's bit
    for bit. State as :class:`SGD`'s (``mp_nag_mom_update`` keeps the master
    last too).

    Args:
      momentum: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _momentum_kernels = (K.nag_mom_weight, K.sgd_weight)
    # MXNet's new weight itself, not w + (w_new - w), which can miss it by an
    # ulp of the larger weight where the two are not within a factor 2.
    _gives_weight = True

    def __init__(self, momentum=0.0, **kwargs):
        self.momentum = momentum
        self._check_own()
        super().__init__(**kwargs)

    def _host_hyper(self, index, lr, wd, t):
        return dict(lr=lr, wd=wd, momentum=self.momentum)


@register
class Signum(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.Signum``: :func:`mxopt.signum`'s arithmetic.
    Its default ``learning_rate=0.01`` goes to the base class, so, as in MXNet,
    it overwrites a scheduler's ``base_lr`` even when not passed. ``wd_lh != 0``
    with ``momentum=0`` is a ValueError here (MXNet raises at the first update).

    Args:
      learning_rate, momentum, wd_lh: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _momentum_kernels = (K.signum_update, K.signsgd_update)

    def __init__(self, learning_rate=0.01, momentum=0.9, wd_lh=0.0, **kwargs):
        self.momentum, self.wd_lh = momentum, wd_lh
        self._check_own()
        super().__init__(learning_rate=learning_rate, **kwargs)

    def _host_hyper(self, index, lr, wd, t):
        return dict(lr=lr, wd=wd, momentum=self.momentum, wd_lh=self.wd_lh)


@register
class AdaGrad(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.AdaGrad`` (dense): :func:`mxopt.adagrad`'s
    arithmetic, with MXNet's NDArray scalar operands. State: ``history``
    (float32; a float16 weight needs ``multi_precision``). ``clip_gradient=0``
    clips every gradient to 0, as in MXNet.

    Args:
      eps: as in MXNet (stored, as there, as ``float_stable_eps``).
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.adagrad_update)
    _states = ("history",)
    _operands = frozenset({"lr", "wd", "rescale_grad", "eps"})
    _float32_state = True

    def __init__(self, eps=1e-7, **kwargs):
        self.float_stable_eps = eps
        self._check_own()
        super().__init__(**kwargs)

    def _host_hyper(self, index, lr, wd, t):
        return dict(lr=lr, wd=wd, eps=self.float_stable_eps)


@register
class AdaDelta(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.AdaDelta``: :func:`mxopt.adadelta`'s
    arithmetic. It never reads the learning rate (nor calls the scheduler), as
    MXNet. State: ``(acc_g, acc_delta)`` (float32; a float16 weight needs
    ``multi_precision``). ``clip_gradient=0`` clips every gradient to 0.

    Args:
      rho, epsilon: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.adadelta_update)
    _states = ("acc_g", "acc_delta")
    _operands = frozenset({"wd", "rescale_grad", "rho", "epsilon", "one_minus_rho"})
    _reads_lr = False
    _float32_state = True

    def __init__(self, rho=0.90, epsilon=1e-5, **kwargs):
        self.rho, self.epsilon = rho, epsilon
        self._check_own()
        super().__init__(**kwargs)

    def _host_hyper(self, index, lr, wd, t):
        # 1 - rho in Python's float64, as MXNet's Python side computes it.
        return dict(wd=wd, rho=self.rho, epsilon=self.epsilon, one_minus_rho=1.0 - self.rho)


@register
class Adam(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.Adam`` on JAX arrays; state ``(mean, var)``.
    See :func:`mxopt.adam` for the update rule; the bias correction is folded
    into the rate on the host in float64, as MXNet does (bit for bit).
    ``lazy_update`` matters only for MXNet's row_sparse arrays; it is kept.

    Args:
      learning_rate, beta1, beta2, epsilon, lazy_update: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.adam_update)
    _states = ("mean", "var")

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 lazy_update=True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.lazy_update = lazy_update
        self._check_own()

    def _check_own(self):
        super()._check_own()
        v.check_bool("lazy_update", self.lazy_update)

    def _host_hyper(self, index, lr, wd, t):
        hp = K.adam_fold(dict(lr=lr, t=t, beta1=self.beta1, beta2=self.beta2))
        return dict(lr=hp["lr"], wd=wd, beta1=self.beta1, beta2=self.beta2,
                    epsilon=self.epsilon)


@register
class Adamax(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.Adamax`` on JAX arrays; state ``(m, u)``.
    See :func:`mxopt.adamax`: ``clip_gradient=0`` (NaN weights in MXNet) is
    refused; ``clip_gradient`` None is off.

    Args:
      learning_rate, beta1, beta2: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.adamax_update)
    _states = ("m", "u")
    _operands = frozenset({"lr", "wd", "rescale_grad", "beta1", "beta2", "one_minus_beta1"})

    def __init__(self, learning_rate=0.002, beta1=0.9, beta2=0.999, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2 = beta1, beta2
        self._check_own()

    def _check_own(self):
        super()._check_own()
        alias.check_python_side_clip(self.clip_gradient, "Adamax")

    def _host_hyper(self, index, lr, wd, t):
        hp = K.adamax_fold(dict(lr=lr, t=t, beta1=self.beta1))
        return dict(lr=hp["lr"], wd=wd, beta1=self.beta1, beta2=self.beta2,
                    one_minus_beta1=hp["one_minus_beta1"])


@register
class Nadam(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.Nadam`` on JAX arrays; state ``(m, v)``,
    and ``m_schedule``, one float on the optimizer multiplied on every update
    call of every index (MXNet's quirk; see :func:`mxopt.nadam`).
    ``clip_gradient=0`` clips every gradient to 0, None is off.

    Args:
      learning_rate, beta1, beta2, epsilon, schedule_decay: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.nadam_update)
    _states = ("m", "v")
    _operands = frozenset({"lr", "wd", "rescale_grad", "beta1", "beta2", "epsilon",
                           "one_minus_momentum_t", "momentum_t_1", "one_minus_schedule",
                           "one_minus_schedule_next", "one_minus_beta2_t", "one_minus_beta1",
                           "one_minus_beta2"})

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 schedule_decay=0.004, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.schedule_decay = schedule_decay
        self.m_schedule = 1.
        self._check_own()

    def _check_own(self):
        super()._check_own()
        v.check_scalar("m_schedule", self.m_schedule)

    def _host_hyper(self, index, lr, wd, t):
        hp = dict(lr=lr, wd=wd, t=t, beta1=self.beta1, beta2=self.beta2,
                  epsilon=self.epsilon, schedule_decay=self.schedule_decay)
        additions, self.m_schedule = K.nadam_advance(self.m_schedule, hp)
        del hp["t"], hp["schedule_decay"]
        return dict(hp, **additions)


@register
class Ftrl(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.Ftrl`` on JAX arrays; state ``(z, n)``,
    float32 (float16 weights need ``multi_precision``, as in MXNet). As in
    MXNet, ``learning_rate`` is not passed to the base class, so it never
    overwrites a scheduler's ``base_lr``. A rate of 0 is refused (NaN in MXNet).

    Args:
      lamda1, learning_rate, beta: as in MXNet (in MXNet's order).
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.ftrl_update)
    _rebuild = staticmethod(K.ftrl_weight)
    _states = ("z", "n")
    _float32_state = True
    _rate_divides = True

    def __init__(self, lamda1=0.01, learning_rate=0.1, beta=1, **kwargs):
        super().__init__(**kwargs)
        self.lamda1, self.beta = lamda1, beta
        alias.check_rate_divides(learning_rate, "Ftrl")
        self.lr = learning_rate
        self._check_own()

    def _host_hyper(self, index, lr, wd, t):
        return dict(lr=lr, wd=wd, lamda1=self.lamda1, beta=self.beta)


@register
class FTML(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.FTML`` on JAX arrays; state ``(d, v, z)``.
    See :func:`mxopt.ftml`; the powers are libm's ``powf`` on the host, as in
    MXNet's kernel. A rate of 0 is refused (NaN in MXNet).

    Args:
      beta1, beta2, epsilon: as in MXNet (the rate is the base class's).
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.ftml_update)
    _rebuild = staticmethod(lambda d, v, z, hyper: K.ftml_weight(d, z))
    _states = ("d", "v", "z")
    _operands = frozenset({"epsilon"})  # a C++ double field: parsed as a double, then cast
    _rate_divides = True

    def __init__(self, beta1=0.6, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        if self.lr is not None:
            alias.check_rate_divides(self.lr, "FTML")
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self._check_own()

    def _host_hyper(self, index, lr, wd, t):
        hp = K.ftml_fold(dict(t=t, beta1=self.beta1, beta2=self.beta2))
        return dict(lr=lr, wd=wd, beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon,
                    beta1_t=hp["beta1_t"], beta2_t=hp["beta2_t"])


# ----------------------------------------------------------------------------------
# LARS and LAMB: layer-wise trust ratios, MXNet's list-taking optimizers
# ----------------------------------------------------------------------------------

@register
class LARS(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.LARS`` on JAX arrays: :func:`mxopt.lars`'s
    arithmetic (``multi_sum_sq``, ``multi_lars``, ``preloaded_multi_sgd_*``).
    State: ``mom`` or None with ``momentum=0``; ``(mom | None, master)`` under
    ``multi_precision``, as MXNet's fused kernels.

    The calls are MXNet's: ``update`` takes an index or a list of indices, and
    each call recomputes the momentum correction from the base rates of this
    call and the previous one, so after a rate change only the first call sees
    it. :class:`mxopt.Updater` hands a list call over four indices at a time
    per dtype, as MXNet's does; one index at a time, only the first index after
    a change is corrected. Names come from ``param_idx2name`` (else ``str(i)``,
    which never ends in ``gamma``/``beta``/``bias``: a Gluon Trainer's
    parameters all get the trust ratio); with it, ``wd_mult`` defaults to 0 for
    every name not ending in ``_weight``, ``_gamma`` included.

    Args:
      momentum, lazy_update, eta, eps, momentum_correction: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments (learning rate 0.01 by default;
        a scheduler's ``base_lr`` is never overwritten).
    """

    _momentum_kernels = (K.lars_mom_update, K.lars_update)
    _tuple_fields = frozenset({"lr", "wd"})  # multi_lars' lrs, preloaded wds: float32

    def __init__(self, momentum=0.0, lazy_update=True, eta=0.001, eps=0,
                 momentum_correction=True, **kwargs):
        self.momentum, self.lazy_update, self.eta, self.eps = momentum, lazy_update, eta, eps
        self.momentum_correction = momentum_correction
        self.skip = 0  # MXNet's attribute (unused there too), kept for its pickles
        self.last_lr = self.cur_lr = None
        self._check_own()
        super().__init__(**kwargs)

    def _check_own(self):
        super()._check_own()
        for name in ("last_lr", "cur_lr"):
            v.check_scalar(name, getattr(self, name), allow_none=True)

    def set_wd_mult(self, args_wd_mult):
        """:meth:`Optimizer.set_wd_mult` with LARS's rule: with ``param_idx2name``,
        every name not ending in ``_weight`` defaults to 0 (``_gamma`` too)."""
        super().set_wd_mult(args_wd_mult)
        attr = self.sym_info[0] if self.sym_info else {}
        for n in self.idx2name.values():
            if (n.endswith("_gamma") and n not in args_wd_mult
                    and "__wd_mult__" not in attr.get(n, {})):
                self.wd_mult[n] = 0.0

    def _get_lrs(self, indices):
        # MXNet's LARS shifts cur_lr/last_lr on every call (once for a list).
        if self.cur_lr is not None:
            self.last_lr = self.cur_lr
        lr = self.lr_scheduler(self.num_update) if self.lr_scheduler is not None else self.lr
        if self.cur_lr is None:
            self.last_lr = lr
        self.cur_lr = lr
        return super()._get_lrs(indices)

    def _host_hyper(self, index, lr, wd, t):
        # The momentum correction of this call's base rates (cur_lr, last_lr).
        momentum = self.momentum
        if momentum > 0 and self.momentum_correction and self.last_lr != 0:
            momentum = momentum * (self.cur_lr / self.last_lr)
        name = self.idx2name[index] if index in self.idx2name else str(index)
        return dict(lr=lr, wd=wd, momentum=momentum, eta=self.eta, eps=self.eps,
                    trust=not name.endswith(alias.LARS_KEEPS_RATE))


@register
class LAMB(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.LAMB`` on JAX arrays: :func:`mxopt.lamb`'s
    arithmetic (``multi_lamb_update`` / ``multi_mp_lamb_update``). State
    ``(mean, var)``; ``(master, (mean, var))`` under ``multi_precision``.

    The calls are MXNet's. A list of indices (what MXNet's Updater, and so
    :class:`mxopt.Updater`, always hands LAMB) runs ``multi_lamb_update``, as
    :func:`mxopt.lamb` does. One index (``update(i, ...)``, called directly)
    runs MXNet's ``lamb_update_phase1/2`` instead (twinned by
    :func:`mxopt.reference.lamb_update_phase1` and ``phase2``): a few operations round
    differently, ``r1`` is the norm of the master rather than of the stored
    float16 weight, and under ``multi_precision`` MXNet writes the float16
    weight but never updates the float32 master, so every such step starts
    from the first master again. That is MXNet's bug, reproduced; pass
    ``[i]`` (a list of one index) for the list call's arithmetic, which
    updates the master.

    Args:
      learning_rate: as in MXNet (the signature rate overwrites a scheduler's
        ``base_lr``, with MXNet's warning).
      beta1, beta2, epsilon, lower_bound, upper_bound, bias_correction: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.lamb_update)
    _states = ("mean", "var")

    @property
    def _tuple_fields(self):
        # multi_lamb_update's lrs and wds are Tuple<float>; the phases' are floats.
        return frozenset() if self._single_call else frozenset({"lr", "wd"})

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-6,
                 lower_bound=None, upper_bound=None, bias_correction=True, **kwargs):
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.lower_bound, self.upper_bound = lower_bound, upper_bound
        self.bias_correction = bias_correction
        self._check_own()
        super().__init__(learning_rate=learning_rate, **kwargs)

    def _rates(self, indices):
        # MXNet's LAMB counts and reads the rate index by index.
        rates = []
        for i in indices:
            rates += super()._rates([i])
        return rates

    def _kernel_for(self):
        return K.lamb_phases_update if self._single_call else K.lamb_update

    def _new_master(self, master, new):
        # mp_lamb_update_phase2 writes the float16 weight only: MXNet never
        # updates the master of a single-index call (a list of one index does).
        return master if self._single_call else new

    def _host_hyper(self, index, lr, wd, t):
        if self._single_call:  # std::pow(float, int): a double power, cast to float
            powers = {f"beta{k}_t": float(np.float32(
                np.float64(received_float(getattr(self, f"beta{k}"))) ** t)) for k in (1, 2)}
        else:
            powers = K.lamb_fold(dict(t=t, beta1=self.beta1, beta2=self.beta2))
        # A bound is passed only when truthy (a static None is off).
        return dict(lr=lr, wd=wd, beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon,
                    beta1_t=powers["beta1_t"], beta2_t=powers["beta2_t"],
                    lower_bound=self.lower_bound or None, upper_bound=self.upper_bound or None,
                    bias_correction=bool(self.bias_correction))


# ----------------------------------------------------------------------------------
# ccSGD, Test, DCASGD, SGLD, GroupAdaGrad, LBSGD (issue 18)
# ----------------------------------------------------------------------------------

@register
class ccSGD(SGD):  # noqa: N801  (MXNet's name; registered as "ccsgd")
    """MXNet 1.9.1's ``mxnet.optimizer.ccSGD``: :class:`SGD` under its deprecated
    name, identical in every respect (as in MXNet). Constructing one warns
    (``DeprecationWarning``) that :class:`SGD` replaces it.

    Args:
      *args: as :class:`SGD`'s.
      **kwargs: as :class:`SGD`'s.
    """

    def __init__(self, *args, **kwargs):
        warnings.warn(alias.CCSGD_DEPRECATION.format(replacement="mxopt.SGD "
                                                     "(mxopt.create('sgd'))"),
                      DeprecationWarning, stacklevel=v.caller_stacklevel())
        super().__init__(*args, **kwargs)


@register
class Test(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.Test`` (registered as ``test``), exactly:
    ``w += grad * rescale_grad``, and the state (float32 zeros from
    ``create_state``, MXNet's ``zeros`` default dtype) becomes a copy of the new
    weight. It reads no rate, decay or clip bound and never counts updates
    (``num_update`` stays at ``begin_num_update``). See
    :func:`mxopt.test_optimizer`. Marked ``__test__ = False`` for pytest.

    Args:
      **kwargs: the :class:`Optimizer` arguments.
    """

    __test__ = False
    _kernel = staticmethod(K.test_update)
    _states = ("weight_copy",)
    _operands = frozenset({"rescale_grad"})
    _reads_lr = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def _fresh_buffer(self, index, name, weight):
        return jnp.zeros(weight.shape, jnp.float32)

    def _host_hyper(self, index, lr, wd, t):
        return {}


@register
class DCASGD(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.DCASGD``: :func:`mxopt.dcasgd`'s arithmetic.
    State: MXNet's ``(None, weight_previous)``, the second a copy of the weight
    at ``create_state``. Any ``momentum`` other than 0 is a ValueError at
    construction (MXNet 1.9.1 raises at the first update). ``clip_gradient=0``
    clips every gradient to 0.

    Args:
      momentum: must be 0.
      lamda: the delay-compensation scale.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.dcasgd_update)
    _states = ("weight_previous",)
    _operands = frozenset({"lr", "wd", "rescale_grad", "lamda"})

    def __init__(self, momentum=0.0, lamda=0.04, **kwargs):
        self.momentum, self.lamda = momentum, lamda
        self._check_own()
        super().__init__(**kwargs)
        self.weight_previous = {}  # as MXNet's (unused there too)

    def _fresh_buffer(self, index, name, weight):
        return jnp.array(weight, copy=True)

    def _host_hyper(self, index, lr, wd, t):
        return dict(lr=lr, wd=wd, lamda=self.lamda)


@register
class SGLD(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.SGLD``: :func:`mxopt.sgld`'s arithmetic.
    State: None, as in MXNet. MXNet draws the noise from its global
    ``mx.random``; this class draws it from ``key``, split on every update
    call (``key, call_key = jax.random.split(key)``), so a run is reproducible
    from its key.

    Args:
      key: a JAX PRNG key; default ``jax.random.PRNGKey(0)`` (every SGLD made
        without one draws the same noise: pass your own for independent runs).
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.sgld_update)
    _operands = frozenset({"lr", "wd", "rescale_grad"})

    def __init__(self, key=None, **kwargs):
        key = jax.random.PRNGKey(0) if key is None else key
        alias.sgld(key=key)  # its rules
        self.key = np.asarray(_raw_key(key))
        super().__init__(**kwargs)

    def _host_hyper(self, index, lr, wd, t):
        new_key, call_key = jax.random.split(jnp.asarray(self.key))
        self.key = np.asarray(new_key)
        return dict(lr=lr, wd=wd, key=call_key)

    def _received(self, name, value, dtype):
        if name == "key":
            return value
        return super()._received(name, value, dtype)


def _raw_key(key):
    # uint32 key data, as mxopt.sgld's state keeps it (typed keys unwrapped).
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


@register
class GroupAdaGrad(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.contrib.GroupAdaGrad`` (registered as
    ``groupadagrad``), dense: :func:`mxopt.groupadagrad`'s arithmetic. State:
    ``history`` of shape ``(rows, 1)``, float32. A weight that is not 2-D is a
    ValueError at ``create_state``, and a weight decay that is not 0 after
    multipliers one at ``update`` (MXNet asserts both), each naming the index.

    Args:
      eps: as in MXNet (stored, as there, as ``float_stable_eps``).
      **kwargs: the :class:`Optimizer` arguments.
    """

    _kernel = staticmethod(K.group_adagrad_update)
    _states = ("history",)
    _operands = frozenset({"lr", "rescale_grad", "eps"})
    _float32_state = True

    def __init__(self, eps=1e-5, **kwargs):
        self.float_stable_eps = eps
        self._check_own()
        super().__init__(**kwargs)

    def _fresh_buffer(self, index, name, weight):
        alias.check_groupadagrad_leaf(f"index {index!r}", weight, 0.0)
        return jnp.zeros((weight.shape[0], 1), weight.dtype)

    def _host_hyper(self, index, lr, wd, t):
        alias.check_groupadagrad_leaf(f"index {index!r}", jnp.zeros((1, 1)), wd)
        return dict(lr=lr, eps=self.float_stable_eps)


@register
class LBSGD(_KernelOptimizer):
    """MXNet 1.9.1's ``mxnet.optimizer.LBSGD``: :func:`mxopt.lbsgd`'s rule with
    MXNet's Python side: the rate and decay are read *before* the update is
    counted; gradients accumulate per index in ``cumgrads`` (on the optimizer,
    as in MXNet) and every ``batch_scale``-th call of an index updates the
    weight through ``sgd_mom_update`` / ``sgd_update`` with ``lr * lbmult``
    (the other calls leave it as it is). State: ``mom`` or None (float16 under
    ``multi_precision``: the base class's ``(master, state)``, as MXNet ends up
    with). The 'lars' norms are NumPy float32 sums on the host, as MXNet's.

    Args:
      momentum, multi_precision, warmup_strategy, warmup_epochs: as in MXNet.
      batch_scale, updates_per_epoch, begin_epoch, num_epochs: as in MXNet.
      **kwargs: the :class:`Optimizer` arguments.
    """

    _momentum_kernels = (K.sgd_mom_update, K.sgd_update)

    def __init__(self, momentum=0.0, multi_precision=False, warmup_strategy='linear',
                 warmup_epochs=5, batch_scale=1, updates_per_epoch=32, begin_epoch=0,
                 num_epochs=60, **kwargs):
        self.momentum, self.warmup_strategy = momentum, warmup_strategy
        self.warmup_epochs, self.batch_scale = warmup_epochs, batch_scale
        self.updates_per_epoch, self.begin_epoch = updates_per_epoch, begin_epoch
        self.num_epochs = num_epochs
        self._check_own()
        super().__init__(multi_precision=multi_precision, **kwargs)
        self.init_updates = begin_epoch * updates_per_epoch
        self.lbmult = 1
        self.cumgrads = {}
        self.adaptive = False
        self.admult = 1

    def _rates(self, indices):
        # MXNet's LBSGD reads the rate and decay before counting.
        lrs, wds = self._get_lrs(indices), self._get_wds(indices)
        self._update_count(indices)
        return [(lr, wd, self._index_update_count[i]) for i, lr, wd in zip(indices, lrs, wds)]

    def _cumulate_gradient(self, grad, index):
        """MXNet's: the first call (and the first after an update) starts the sum."""
        cgrad = self.cumgrads.get(index)
        if cgrad and cgrad["num_cums"] > 0:
            cgrad = {"cum_grad": cgrad["cum_grad"] + grad, "num_cums": cgrad["num_cums"] + 1}
        else:
            cgrad = {"cum_grad": grad, "num_cums": self.init_updates + 1}
        self.cumgrads[index] = cgrad
        return cgrad

    def _run(self, index, weight, grad, buffers, lr, wd, t, stored_dtype):
        cgrad = self._cumulate_gradient(grad, index)
        if cgrad["num_cums"] % self.batch_scale:
            # MXNet's sgd_update(lr=0): the weight stays (a new array, as every
            # update returns one).
            return jnp.array(weight, copy=True), buffers
        g = K.divide(cgrad["cum_grad"], jnp.asarray(scalar_operand(float(self.batch_scale),
                                                                   weight.dtype)))
        hp = dict(batch_scale=self.batch_scale, warmup_strategy=self.warmup_strategy,
                  nwup=self.warmup_epochs * self.updates_per_epoch)
        if self.warmup_strategy == "lars":
            lbmult = K.lbsgd_lars_mult(weight, g, wd)
        else:
            lbmult = K.lbsgd_warmup_mult(cgrad["num_cums"], hp)
        cgrad["cum_grad"] = 0  # MXNet's reset; num_cums goes on counting
        return super()._run(index, weight, g, buffers, lr * lbmult, wd, t, stored_dtype)

    def _host_hyper(self, index, lr, wd, t):
        return dict(lr=lr, wd=wd, momentum=self.momentum)

    def __getstate__(self):
        ret = super().__getstate__()
        ret["cumgrads"] = {i: {"cum_grad": c["cum_grad"] if isinstance(c["cum_grad"], int)
                               else np.asarray(c["cum_grad"]), "num_cums": c["num_cums"]}
                           for i, c in self.cumgrads.items()}
        return ret


class Updater:
    """MXNet's ``Updater``: creates states on first sight of an index and
    updates. ``__call__(index, grad, weight)`` returns the new weight (a list for
    a list of indices): ``weight = updater(index, grad, weight)``. ``optimizer``
    and ``states`` are plain attributes, as Gluon's Trainer expects."""

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
        # MXNet's rule: an optimizer with an aggregate_num (SGD, LARS, LAMB) takes
        # list calls; LARS's momentum correction depends on how they are split.
        if self.aggregate_updates and self.optimizer.aggregate_num > 0:
            return self._update_lists(list(index), grad, weight)
        return [self._update_one(i, g, w) for i, g, w in zip(index, grad, weight)]

    def _update_lists(self, indices, grads, weights):
        """MXNet's aggregated path: the indices grouped by weight dtype, in order
        of first appearance, each group handed over ``aggregate_num`` at a time."""
        indices = [i.decode() if isinstance(i, bytes) else i for i in indices]
        groups = {}
        for k, (i, w) in enumerate(zip(indices, weights)):
            if i not in self.states:
                self.states[i] = self.optimizer.create_state_multi_precision(i, w)
                self.states_synced[i] = True
            groups.setdefault(_as_array("weight", w).dtype, []).append(k)
        out = [None] * len(indices)
        size = self.optimizer.aggregate_num
        for ks in groups.values():
            for start in range(0, len(ks), size):
                chunk = ks[start:start + size]
                with self.optimizer._dropped.outer():
                    new_weights, new_states = self.optimizer.update_multi_precision(
                        [indices[k] for k in chunk], [weights[k] for k in chunk],
                        [grads[k] for k in chunk], [self.states[indices[k]] for k in chunk])
                for k, w, st in zip(chunk, new_weights, new_states):
                    out[k], self.states[indices[k]] = w, st
        for i, w in zip(indices, weights):
            self.optimizer._dropped.note(self.optimizer, i, w,
                                         "weights = updater(indices, grads, weights)")
        return out

    def _update_one(self, index, grad, weight):
        if isinstance(index, bytes):
            index = index.decode()
        if index not in self.states:
            self.states[index] = self.optimizer.create_state_multi_precision(index, weight)
            self.states_synced[index] = True
        with self.optimizer._dropped.outer():
            new_weight, self.states[index] = self.optimizer.update_multi_precision(
                index, weight, grad, self.states[index])
        self.optimizer._dropped.note(self.optimizer, index, weight,
                                     "weight = updater(index, grad, weight)")
        return new_weight

    def get_states(self, dump_optimizer=False, *, mxnet=False):
        """Pickle the states, with the optimizer if asked.

        Args:
          dump_optimizer: also save the optimizer (as ``Trainer.save_states`` does).
          mxnet: False (default) pickles mxopt's objects (NumPy arrays, the mxopt
            optimizer and scheduler), for :meth:`set_states`. True writes the file
            MXNet 1.9.1 itself writes: NDArrays and, with ``dump_optimizer``, the
            MXNet optimizer (:func:`mxopt.facade.optimizer_to_mxnet`), which MXNet's
            ``Updater.set_states`` / Gluon ``Trainer.load_states`` load and continue
            from (and :meth:`set_states` reads too).

        Returns:
          The bytes.
        """
        states = jax.tree.map(np.asarray, self.states)
        if mxnet:
            record = optimizer_to_mxnet(self.optimizer) if dump_optimizer else None
            return _fmt.dumps_states(_fmt.MXNetStates(states, record))
        return pickle.dumps((states, self.optimizer) if dump_optimizer else states,
                            protocol=_PICKLE_PROTOCOL)

    def set_states(self, states, *, key=None):
        """Restore from :meth:`get_states` bytes, or from MXNet 1.9.1's own
        (``Updater.get_states`` / ``Trainer.save_states`` files of any optimizer
        mxopt has; a pickled MXNet ``Adam`` becomes an :class:`Adam` with its
        counts, multipliers and scheduler: :func:`mxopt.facade.optimizer_from_mxnet`). The
        bytes are read with :mod:`mxopt.interop`'s restricted unpickler, which
        runs nothing: only arrays, plain containers, registered optimizers,
        :mod:`mxopt.lr_scheduler` schedulers and MXNet's optimizers and
        schedulers are rebuilt, and the rebuilt optimizer is checked with the
        constructor's rules. Anything else, and any corrupted input, raises a
        ``ValueError`` (:class:`mxopt.interop.MXNetFormatError`) saying what is wrong;
        the updater is then left unchanged.

        ``key`` is the PRNG key of a restored MXNet :class:`SGLD`, which MXNet's
        file cannot hold (None: the class's default; see
        :func:`mxopt.facade.optimizer_from_mxnet`)."""
        if not isinstance(states, (bytes, bytearray, memoryview)):
            raise TypeError(f"set_states expects bytes from get_states, got "
                            f"{type(states).__name__}")
        source = "set_states"
        own = _own_classes()
        loaded = _fmt.restricted_loads(states, source, classes=_fmt.MXNET_CLASSES | set(own),
                                       scalar_types=_SCALAR_TYPES)
        loaded, record = _fmt.states_payload(
            loaded, source, _fmt.OPTIMIZER_CLASSES | {c for c, k in own.items()
                                                      if issubclass(k, Optimizer)})
        optimizer = self.optimizer
        if record is not None:
            try:
                if record.cls in _fmt.OPTIMIZER_CLASSES:
                    optimizer = optimizer_from_mxnet(record, key=key)
                else:
                    if key is not None:
                        raise ValueError("key= is for an MXNet SGLD, which has none; mxopt's "
                                         "own pickle carries its key")
                    optimizer = _rebuild(record, own, {})
            except (TypeError, ValueError, KeyError) as e:
                raise _fmt.MXNetFormatError(
                    f"{source}: the pickled optimizer ({record.cls}) cannot be restored: "
                    f"{e.args[0] if isinstance(e, KeyError) and e.args else e}") from None
        self.optimizer = optimizer
        self.states = updater_states_from_mxnet(_fmt.MXNetStates(loaded))
        self.states_synced = dict.fromkeys(self.states.keys(), False)


def get_updater(optimizer):
    """Return an :class:`Updater` for ``optimizer``."""
    return Updater(optimizer)


# get_states' pickles: protocol 4 whatever Python's default, so set_states' reader
# knows every opcode and global they use.
_PICKLE_PROTOCOL = 4
# Arrays of these dtypes pickle their scalar type by name.
_SCALAR_TYPES = {"ml_dtypes.bfloat16": jnp.bfloat16}
_SCHEDULER_CLASSES = (lr_scheduler.LRScheduler, lr_scheduler.FactorScheduler,
                      lr_scheduler.MultiFactorScheduler, lr_scheduler.PolyScheduler,
                      lr_scheduler.CosineScheduler)


def _own_classes():
    """Qualified name -> class of what mxopt's own pickles may hold: the registered
    optimizers and mxopt's LR schedulers."""
    classes = list(Optimizer.opt_registry.values()) + list(_SCHEDULER_CLASSES)
    return {f"{k.__module__}.{k.__qualname__}": k for k in classes}


def _rebuild(value, classes, memo):
    """Records of ``classes`` (read by the restricted unpickler) -> real objects, as
    pickle would build them (``__new__``, then ``__setstate__``), keeping shared
    references shared."""
    if id(value) in memo:
        return memo[id(value)][1]
    if isinstance(value, _fmt.MXNetObject):
        klass = classes[value.cls]
        out = klass.__new__(klass)
        fields = {k: _rebuild(x, classes, memo) for k, x in value.fields.items()}
        out.__setstate__(fields)
    elif isinstance(value, dict):
        out = {k: _rebuild(x, classes, memo) for k, x in value.items()}
    elif isinstance(value, list):
        out = [_rebuild(x, classes, memo) for x in value]
    elif isinstance(value, tuple):
        out = tuple(_rebuild(x, classes, memo) for x in value)
    else:
        return value
    memo[id(value)] = (value, out)
    return out


def optimizer_from_mxnet(record, *, key=None):
    """The mxopt class (:class:`Adam`, :class:`SGD`, ..., the one registered under
    MXNet's name) carrying a pickled MXNet optimizer's hyperparameters,
    multipliers, names, update counts, LR scheduler and optimizer-wide scalars
    (Nadam's ``m_schedule``, LARS's ``cur_lr``, LBSGD's ``cumgrads``).

    Args:
      record: the optimizer of :func:`mxopt.interop.load_states`, any MXNet
        optimizer mxopt has.
      key: :class:`SGLD`'s PRNG key, which MXNet does not have (its noise comes
        from its global generator); None for the class's default
        (``jax.random.PRNGKey(0)``). Other optimizers take none.

    Returns:
      The optimizer, restored as unpickling restores one (its attributes checked
      by the constructor's rules).
    """
    fmt = _fmt.optimizer_format(record)
    klass = Optimizer.opt_registry.get(record.name.lower())
    if klass is None or not issubclass(klass, Optimizer):
        raise ValueError(f"no optimizer is registered under {record.name.lower()!r} to "
                         f"restore a {record.cls} into")
    fields = {k: (x.item() if isinstance(x, np.generic) else x) for k, x in record.fields.items()}
    sched = record.get("lr_scheduler")
    fields["lr_scheduler"] = None if sched is None else lr_scheduler.from_mxnet(
        sched, record.get("lr") if fmt.scheduler_takes_lr else None)
    # MXNet passes a kernel's clip bound only when truthy (and the kernel clips only
    # when it is >= 0); the Python-side optimizers clip whenever it is not None.
    fields["clip_gradient"] = (_fmt.real_field(record, "clip_gradient", allow_none=True)
                               if fmt.python_clip else _fmt.clip_bound(record, "clip_gradient"))
    for field in fmt.clip_bounds:
        fields[field] = _fmt.clip_bound(record, field)
    for field in ("lr_mult", "wd_mult", "idx2name"):
        fields[field] = _field_dict(record, field)
    fields["begin_num_update"] = record.get("begin_num_update") or 0
    fields["num_update"] = record.get("num_update") or 0
    counts = record.get("_all_index_update_counts") or {0: _field_dict(
        record, "_index_update_count")}
    if not isinstance(counts, dict):
        raise ValueError(f"the optimizer's _all_index_update_counts is {type(counts).__name__}, "
                         f"not a dict")
    fields["_all_index_update_counts"] = {
        int(d): _field_dict(record, f"update counts of device {d}", c) for d, c in counts.items()}
    fields["_index_update_count"] = fields["_all_index_update_counts"].setdefault(0, {})
    if fmt.restore is not None:  # what the class keeps and MXNet does not (LBSGD's begin_epoch)
        fields.update(fmt.restore(record.fields))
    if key is not None and "key" not in fmt.caller:
        raise ValueError(f"key= is for SGLD, whose state carries one; {record.name} has none")
    for field in fmt.caller:  # SGLD's key: the caller's, or the class's default
        fields[field] = getattr(klass(**({} if key is None else {field: key})), field)
    opt = klass.__new__(klass)
    opt.__setstate__(fields)
    return opt


def optimizer_to_mxnet(optimizer):
    """The record MXNet 1.9.1 pickles for ``optimizer`` (an mxopt class MXNet has:
    :class:`SGD`, :class:`Adam`, ..., :class:`RMSProp`): its ``__dict__``, with
    this optimizer's hyperparameters, multipliers, names, update counts, carried
    scalars and scheduler (as a freshly built MXNet scheduler, which catches up
    with the count when MXNet first calls it). The reverse of
    :func:`mxopt.facade.optimizer_from_mxnet`.

    Args:
      optimizer: the mxopt optimizer.

    Returns:
      An :class:`mxopt.interop.MXNetObject` for :func:`mxopt.interop.dumps_states`.
    """
    name = type(optimizer).__name__
    fmt = _fmt.OPTIMIZER_FORMATS.get(name)
    if fmt is None or Optimizer.opt_registry.get(name.lower()) is not type(optimizer):
        raise ValueError(f"{name} has no MXNet counterpart to write; mxopt writes MXNet's "
                         f"{', '.join(sorted(_fmt.OPTIMIZER_FORMATS))}")
    own = {("eps" if field == "float_stable_eps" else field): _plain(getattr(optimizer, field))
           for _, field, _ in fmt.own if field != "m_schedule"}
    record = _fmt.optimizer_record(
        name, learning_rate=optimizer.lr, wd=optimizer.wd, rescale_grad=optimizer.rescale_grad,
        clip_gradient=optimizer.clip_gradient, multi_precision=optimizer.multi_precision,
        lr_scheduler=_scheduler_to_mxnet(optimizer.lr_scheduler),
        begin_num_update=optimizer.begin_num_update, **own)
    counts = {int(d): dict(c) for d, c in optimizer._all_index_update_counts.items()}
    device = next(d for d, c in optimizer._all_index_update_counts.items()
                  if c is optimizer._index_update_count)
    carried = {field: getattr(optimizer, field) for _, field in fmt.carry}
    return record.replace(
        lr=optimizer.lr, lr_mult=dict(optimizer.lr_mult), wd_mult=dict(optimizer.wd_mult),
        num_update=optimizer.num_update, _all_index_update_counts=counts,
        _index_update_count=counts[device], aggregate_num=optimizer.aggregate_num,
        idx2name=dict(optimizer.idx2name), sym_info=optimizer.sym_info, **carried)


def _plain(value):
    # LBSGD's cumgrads hold JAX arrays; MXNet's file holds NDArrays (NumPy here).
    if isinstance(value, dict):
        return {k: _plain(x) for k, x in value.items()}
    return np.asarray(value) if isinstance(value, jax.Array) else value


def _scheduler_to_mxnet(sched):
    if sched is None:
        return None
    name = type(sched).__name__
    state = sched.__getstate__() if isinstance(sched, _SCHEDULER_CLASSES[1:]) else {}
    if "init" not in state or type(sched) not in _SCHEDULER_CLASSES[1:]:
        raise ValueError(f"the optimizer's lr_scheduler is a {name}, which MXNet does not "
                         f"have; MXNet's are FactorScheduler, MultiFactorScheduler, "
                         f"PolyScheduler and CosineScheduler (mxopt.lr_scheduler)")
    record = _fmt.scheduler_record(name, **state["init"])
    if state["base_lr"] != record["base_lr"]:
        # The optimizer's learning_rate overwrote base_lr, as MXNet's constructor does.
        record = record.replace(base_lr=state["base_lr"])
    return record


def _field_dict(record, field, value=None):
    value = record.get(field) if value is None else value
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"the optimizer's {field} is a {type(value).__name__}, not a dict")
    return dict(value)


def updater_states_from_mxnet(states):
    """MXNet's per-index states (an :class:`mxopt.interop.MXNetStates`) as
    :class:`Updater` keeps them: tuples of JAX arrays, and ``(master, inner_state)``
    pairs for multi_precision weights."""
    if not isinstance(states, _fmt.MXNetStates):
        raise TypeError(f"states must be an MXNetStates, got {type(states).__name__}")

    def convert(value):
        if isinstance(value, np.ndarray):
            return jnp.asarray(value)
        if isinstance(value, (tuple, list)):
            return tuple(convert(v) for v in value)
        return value

    return {index: convert(value) for index, value in states.states.items()}
