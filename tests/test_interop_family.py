"""Every MXNet optimizer mxopt has, resumed from MXNet 1.9.1 Trainer checkpoints and
handed back (tests/golden/interop_family, written by
tools/make_golden_interop_family.py; RMSProp's are in test_interop.py), without
MXNet: the functional form under jax.jit, the class form, and the files mxopt
writes, which that script proved MXNet continues from."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mxopt
from mxopt import _mxformat
from mxopt import interop as I
from tests.conftest import GOLDEN_DIR

G = os.path.join(GOLDEN_DIR, "interop_family")
RTOL, ATOL = 1e-5, 1e-6
NAMES = ("sgd", "nag", "signum", "adagrad", "adadelta", "adam", "adamax", "nadam", "ftrl",
         "ftml")
# Issue 18's eight (SGLD, random, has its own tests below). lbsgd's checkpoint falls
# mid-sum, lbsgd_plain's right after an update.
PART2 = ("lars", "lamb", "ccsgd", "test", "dcasgd", "groupadagrad", "lbsgd", "lbsgd_plain")
CONFIGS = (NAMES + tuple(f"{n}_fp16" for n in NAMES) + PART2
           + tuple(f"{n}_fp16" for n in ("lars", "lamb", "test", "dcasgd", "lbsgd")))
CLASSES = {"sgd": mxopt.SGD, "nag": mxopt.NAG, "signum": mxopt.Signum,
           "adagrad": mxopt.AdaGrad, "adadelta": mxopt.AdaDelta, "adam": mxopt.Adam,
           "adamax": mxopt.Adamax, "nadam": mxopt.Nadam, "ftrl": mxopt.Ftrl, "ftml": mxopt.FTML,
           "lars": mxopt.LARS, "lamb": mxopt.LAMB, "ccsgd": mxopt.ccSGD, "test": mxopt.Test,
           "dcasgd": mxopt.DCASGD, "sgld": mxopt.SGLD, "groupadagrad": mxopt.GroupAdaGrad,
           "lbsgd": mxopt.LBSGD}
# State fields that are not MXNet's per-index arrays: optimizer-wide scalars, LBSGD's
# sums (on MXNet's optimizer), SGLD's key.
NOT_ARRAYS = {"m_schedule", "last_lr", "num_cums", "cum_grad", "key"}


def golden(name):
    return os.path.join(G, name)


def read(name):
    with open(golden(name), "rb") as f:
        return f.read()


class Run:
    """One golden run. Leaves are keyed by the Trainer's full names, so that they
    flatten in its index order (which Nadam's shared m_schedule needs)."""

    def __init__(self, name):
        self.name = name
        self.z = np.load(golden(f"{name}.npz"))
        self.meta = json.loads(str(self.z["meta"]))
        self.cfg = self.meta["config"]
        self.params = I.load_params(golden(f"{name}.params"))  # structural names
        self.ckpt = I.load_states(golden(f"{name}.states"))
        self.full = dict(zip(self.meta["structural_names"], self.meta["full_names"]))
        self.index_map = I.trainer_index_map(self.meta["full_names"])
        self.index_of = {v: k for k, v in self.index_map.items()}
        # Gluon keeps Parameter multipliers on the Parameter, not in the file.
        self.mults = {f"param_{m}": {self.index_of[self.full[k]]: v
                                     for k, v in self.cfg[m].items()}
                      for m in ("lr_mult", "wd_mult")}
        # LARS: a Gluon Trainer gives MXNet no names, so every parameter got the
        # trust ratio, 'net_bn_beta' too; resume says so (keep_rate_names=()).
        self.trainable = {self.full[k]: v for k, v in self.params.items()
                          if "running_" not in k}

    def leaf(self, tree, k):
        """The leaf of parameter ``k`` (a full name) in a tree keyed like ``trainable``."""
        return tree[k]

    def full_of_index(self, i):
        return self.index_map[i]

    def leaf_name(self, k):
        return k

    def grads(self, step):
        return {self.full[k]: self.z[f"grad/{step}/{k}"]
                for k in self.meta["structural_names"] if self.full[k] in self.trainable}

    def final(self, k):
        return self.z[f"final/{[s for s, f in self.full.items() if f == k][0]}"]

    def resume(self):
        return I.resume(self.ckpt, self.trainable, self.index_map, **self.mults)


_RUNS = {}


def run_of(name):
    if name not in _RUNS:
        _RUNS[name] = Run(name)
    return _RUNS[name]


def assert_weight(got, want, label):
    got = np.asarray(got)
    assert got.dtype == want.dtype, label
    if want.dtype == np.float16:  # one float16 ulp
        ulp = np.spacing(np.abs(want)).astype(np.float32)
        diff = np.abs(got.astype(np.float32) - want.astype(np.float32))
        assert np.all(diff <= ulp), (label, float(diff.max()))
    else:
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=label)


_STEPS = {}


def jitted_step(tx_key, tx):
    """One compiled step per configuration (its transformation is a closure)."""
    if tx_key not in _STEPS:
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state
        _STEPS[tx_key] = jax.jit(step)
    return _STEPS[tx_key]


def continue_in_jax(run, steps):
    resumed = run.resume()
    step = jitted_step(run.name, resumed.transformation())
    params, state = resumed.params, resumed.state
    for t in range(steps):
        params, state = step(params, state, run.grads(t))
    return resumed, params, state


def inner_and_masters(state):
    if isinstance(state, mxopt.MasterWeightsState):
        return state.inner_state, state.master
    return state, None


@pytest.mark.parametrize("name", CONFIGS)
def test_functional_form_continues_mxnet_under_jit(name):
    run = run_of(name)
    resumed, params, state = continue_in_jax(run, run.meta["steps_after"])
    # ccSGD continues as mxopt.sgd, Test as mxopt.test_optimizer
    assert resumed.alias == _mxformat.OPTIMIZER_FORMATS[run.ckpt.optimizer.name].alias
    for k in run.trainable:
        assert_weight(run.leaf(params, k), run.final(k), k)
    inner, masters = inner_and_masters(state)
    assert int(inner.count) == run.meta["final_num_update"]
    if run.meta["final_m_schedule"] is not None:
        assert float(inner.m_schedule) == pytest.approx(run.meta["final_m_schedule"], rel=1e-12)
    if run.meta.get("final_cur_lr") is not None:  # LARS (a float32 carry)
        assert float(inner.last_lr) == pytest.approx(run.meta["final_cur_lr"], rel=1e-7)
    if run.meta.get("final_num_cums") is not None:  # LBSGD: every index called alike
        assert [int(inner.num_cums)] == run.meta["final_num_cums"]
    fp16 = run.cfg["dtype"] == "float16"
    assert bool(resumed.master_leaves) == fp16 and (masters is not None) == fp16
    fields = [f for f in type(inner)._fields[1:] if f not in NOT_ARRAYS]
    for k in run.trainable:
        idx = run.index_of[k]
        arrays = sorted(f for f in run.z.files if f.startswith(f"final_state/{idx}/")
                        or f == f"final_state/{idx}")
        want = [run.z[f] for f in arrays]
        if fp16:  # the master sits where MXNet keeps it: first, or last for SGD/NAG
            last = _mxformat.OPTIMIZER_FORMATS[run.ckpt.optimizer.name].master_last
            master, want = (want[-1], want[:-1]) if last else (want[0], want[1:])
            np.testing.assert_allclose(run.leaf(masters, k), master, rtol=RTOL, atol=ATOL,
                                       err_msg=k)
        assert len(want) == len(fields), (k, arrays, fields)
        for field, w in zip(fields, want):
            np.testing.assert_allclose(run.leaf(getattr(inner, field), k), w, rtol=RTOL,
                                       atol=ATOL, err_msg=f"{field} {k}")


@pytest.mark.parametrize("name", CONFIGS)
def test_resumed_state_is_what_init_builds(name):
    run = run_of(name)
    resumed = run.resume()
    template = resumed.transformation().init(run.trainable)
    chex.assert_trees_all_equal_shapes_and_dtypes(template, resumed.state)
    kw = resumed.kwargs
    opt = run.cfg["opt"]
    assert kw["multi_precision"] is (run.cfg["dtype"] == "float16")
    assert kw["begin_num_update"] == opt.get("begin_num_update", 0)
    assert kw["rescale_grad"] == opt.get("rescale_grad", 1.0) / run.meta["batch"]
    assert kw["wd"] == opt.get("wd", 0.0)
    lr_mult = {run.leaf_name(run.full[k]): v for k, v in run.cfg["lr_mult"].items()} or None
    wd_mult = {run.leaf_name(run.full[k]): v for k, v in run.cfg["wd_mult"].items()} or None
    assert kw["lr_mult"] == lr_mult and kw["wd_mult"] == wd_mult
    if run.cfg["scheduler"] is not None:
        assert isinstance(kw["learning_rate"], mxopt.lr_scheduler.LRScheduler)


@pytest.mark.parametrize("name", CONFIGS)
def test_export_is_the_file_mxnet_continued_from(name):
    """The golden script loaded {name}.mxopt.states into a Gluon Trainer and continued
    bit-identically to the uninterrupted run; mxopt's export of the converted state
    is exactly those bytes."""
    run = run_of(name)
    converted = I.state_from_mxnet(run.ckpt, run.trainable, run.index_map)
    exported = I.state_to_mxnet(converted.state, converted.params, run.index_map,
                                run.ckpt.optimizer)
    assert I.dumps_states(exported) == read(f"{name}.mxopt.states")


@pytest.mark.parametrize("name", CONFIGS)
def test_export_after_continuing_is_what_mxnet_continued_from(name):
    """The golden script ran this very code (resume, handoff_steps jitted steps,
    state_to_mxnet, save_params), loaded the files into MXNet and continued to
    MXNet's own final weights; mxopt still writes those files."""
    run = run_of(name)
    resumed, params, state = continue_in_jax(run, run.meta["handoff_steps"])
    exported = I.state_to_mxnet(state, params, run.index_map, run.ckpt.optimizer)
    want = I.load_states(golden(f"{name}.jax.states"))
    assert list(exported.states) == list(want.states)
    chex.assert_trees_all_close(dict(exported.states), dict(want.states), rtol=RTOL, atol=ATOL)
    got_opt, want_opt = dict(exported.optimizer.fields), dict(want.optimizer.fields)
    if "m_schedule" in want_opt:
        assert got_opt.pop("m_schedule") == pytest.approx(want_opt.pop("m_schedule"), rel=1e-12)
    if want_opt.get("cur_lr") is not None:
        # LARS's rate: a float32 carry under jit (the handoff ran eagerly, in float64)
        assert got_opt.pop("cur_lr") == pytest.approx(want_opt.pop("cur_lr"), rel=1e-7)
    if "cumgrads" in want_opt:  # LBSGD's sums: arrays, or MXNet's int 0 after an update
        chex.assert_trees_all_close(got_opt.pop("cumgrads"), want_opt.pop("cumgrads"),
                                    rtol=RTOL, atol=ATOL)
    assert got_opt == want_opt
    weights = I.load_params(golden(f"{name}.jax.params"))
    for k in params:
        structural = [s for s, f in run.full.items() if f == k][0]
        assert_weight(run.leaf(params, k), weights[structural], k)
    # Written and read back, the file holds exactly the exported values.
    back = I.loads_states(I.dumps_states(exported))
    chex.assert_trees_all_equal(dict(back.states), dict(exported.states))


class _Param:
    """What Gluon's Trainer puts in optimizer.param_dict (it is not saved)."""

    def __init__(self, lr_mult=1.0, wd_mult=1.0):
        self.lr_mult, self.wd_mult = lr_mult, wd_mult


@pytest.mark.parametrize("name", CONFIGS)
def test_class_form_set_states_continues_mxnet(name):
    run = run_of(name)
    updater = mxopt.get_updater(mxopt.SGD())
    updater.set_states(read(f"{name}.states"))
    opt = updater.optimizer
    klass = CLASSES[run.cfg["optimizer"]]
    assert type(opt) is klass
    counts = _mxformat.OPTIMIZER_FORMATS[run.ckpt.optimizer.name].counts  # Test: never
    assert opt.num_update == run.meta["final_num_update"] - counts * run.meta["steps_after"]
    indices = set(run.mults["param_lr_mult"]) | set(run.mults["param_wd_mult"])
    opt.param_dict = {i: _Param(run.mults["param_lr_mult"].get(i, 1.0),
                                run.mults["param_wd_mult"].get(i, 1.0)) for i in indices}
    weights = {k: jnp.asarray(run.leaf(run.trainable, k)) for k in run.trainable}
    # The Trainer's call: every index in its order, in one list (which LARS's
    # chunks of aggregate_num follow; the others update index by index).
    order = sorted(run.index_of[k] for k in run.trainable)
    keys = [run.full_of_index(i) for i in order]
    for t in range(run.meta["steps_after"]):
        grads = run.grads(t)
        new = updater(order, [jnp.asarray(run.leaf(grads, k)) for k in keys],
                      [weights[k] for k in keys])
        weights.update(zip(keys, new))
    for k in run.trainable:
        assert_weight(weights[k], run.final(k), k)
    assert opt.num_update == run.meta["final_num_update"]
    if run.meta["final_m_schedule"] is not None:
        assert opt.m_schedule == pytest.approx(run.meta["final_m_schedule"], rel=1e-12)


@pytest.mark.parametrize("name", CONFIGS)
def test_class_form_get_states_writes_what_mxnet_continued_from(name):
    """Updater.get_states(dump_optimizer=True, mxnet=True) after loading MXNet's
    checkpoint writes the file the golden script proved MXNet continues from:
    {name}.mxopt.states byte for byte, or, with a scheduler (written freshly built,
    as mxopt keeps no MXNet scheduler state), {name}.fresh_scheduler.states'
    contents."""
    run = run_of(name)
    updater = mxopt.get_updater(mxopt.SGD())
    updater.set_states(read(f"{name}.states"))
    data = updater.get_states(dump_optimizer=True, mxnet=True)
    if run.cfg["scheduler"] is None:
        assert data == read(f"{name}.mxopt.states")
    else:
        got, want = I.loads_states(data), I.load_states(golden(f"{name}.fresh_scheduler.states"))
        chex.assert_trees_all_equal(dict(got.states), dict(want.states))
        sched, want_sched = got.optimizer["lr_scheduler"], want.optimizer["lr_scheduler"]
        assert sched.cls == want_sched.cls and dict(sched.fields) == dict(want_sched.fields)
        got_opt, want_opt = (dict(o.replace(lr_scheduler=None).fields) for o in (got.optimizer,
                                                                                 want.optimizer))
        if "cumgrads" in want_opt:  # LBSGD's sums hold arrays
            chex.assert_trees_all_equal(got_opt.pop("cumgrads"), want_opt.pop("cumgrads"))
        assert got_opt == want_opt
    # ... and reads back into an updater that continues like the original.
    again = mxopt.get_updater(mxopt.Adam())
    again.set_states(data)
    assert type(again.optimizer) is type(updater.optimizer)
    chex.assert_trees_all_equal(again.states, updater.states)
    states_only = I.loads_states(updater.get_states(mxnet=True))
    assert states_only.optimizer is None and list(states_only.states) == list(updater.states)


def test_class_form_export_refuses_what_mxnet_lacks():
    class MySchedule(mxopt.lr_scheduler.LRScheduler):
        def __call__(self, num_update):
            return 0.1

    updater = mxopt.get_updater(mxopt.SGD(lr_scheduler=MySchedule(base_lr=0.1)))
    with pytest.raises(ValueError, match="lr_scheduler is a MySchedule, which MXNet does not "
                                         "have"):
        updater.get_states(dump_optimizer=True, mxnet=True)

    class MySGD(mxopt.SGD):
        pass

    with pytest.raises(ValueError, match="MySGD has no MXNet counterpart to write"):
        mxopt.get_updater(MySGD()).get_states(dump_optimizer=True, mxnet=True)


# --------------------------------------------------------------------------------------
# Fresh records, and what cannot map
# --------------------------------------------------------------------------------------

def test_fresh_records_export_runs_started_in_mxopt():
    """optimizer_record is MXNet's constructor (the golden script compared the
    same function with MXNet's __dict__ for every configuration): a run started in
    mxopt exports with it and reads back as the same state."""
    params = {"b": jnp.zeros(2, jnp.float32), "w": jnp.ones((2, 3), jnp.float32)}
    index_map = {0: "b", 1: "w"}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    for name, tx, record in [
            ("SGD", mxopt.sgd(0.1, momentum=0.9), I.optimizer_record("SGD", learning_rate=0.1,
                                                                      momentum=0.9)),
            ("Nadam", mxopt.nadam(0.01), I.optimizer_record("Nadam", learning_rate=0.01)),
            ("Ftrl", mxopt.ftrl(0.1, lamda1=0.02), I.optimizer_record("Ftrl", lamda1=0.02))]:
        state = tx.init(params)
        updates, state = tx.update(grads, state, params)
        params1 = optax.apply_updates(params, updates)
        exported = I.state_to_mxnet(state, params1, index_map, record)
        assert exported.optimizer["num_update"] == 1
        assert exported.optimizer["_index_update_count"] == {0: 1, 1: 1}
        back = I.resume(I.loads_states(I.dumps_states(exported)), params1, index_map)
        chex.assert_trees_all_equal(back.state, state)
        assert back.alias == name.lower()
    # Through the skip_nonfinite and multi_precision wrappers, in MXNet's layout.
    half = {"w": jnp.ones((2, 3), jnp.float16)}
    tx = mxopt.adam(0.01, multi_precision=True, skip_nonfinite=True)
    state = tx.init(half)
    _, state = tx.update({"w": jnp.full((2, 3), 0.5, jnp.float16)}, state, half)
    exported = I.state_to_mxnet(state, half, {0: "w"},
                                I.optimizer_record("Adam", multi_precision=True))
    master, (mean, var) = exported.states[0]
    assert master.dtype == mean.dtype == np.float32 and master.shape == (2, 3)
    np.testing.assert_array_equal(master, state.master["w"])
    back = I.resume(I.loads_states(I.dumps_states(exported)), half, {0: "w"})
    chex.assert_trees_all_equal(back.state.inner_state.mean, state.inner_state.inner_state.mean)
    assert I.optimizer_record("Ftrl")["lr"] == 0.1
    assert I.optimizer_record("SGD")["aggregate_num"] == 4
    with pytest.raises(TypeError, match="mx.optimizer.Adam has no argument 'momentum'"):
        I.optimizer_record("Adam", momentum=0.9)
    with pytest.raises(ValueError, match="unknown optimizer 'Optimizer'; mxopt converts"):
        I.optimizer_record("Optimizer")
    with pytest.raises(TypeError, match="an optax schedule has no MXNet equivalent"):
        I.optimizer_record("SGD", learning_rate=optax.constant_schedule(0.1))


def test_what_cannot_map_fails_naming_the_leaf():
    run = run_of("adam")
    p = dict(run.trainable)
    with pytest.raises(ValueError, match=r"leaf 'net_fc_weight' \(MXNet index 7\): state mean "
                                         r"has shape \(4, 48\) but the leaf has shape \(48, 4\)"):
        I.state_from_mxnet(run.ckpt, {**p, "net_fc_weight": p["net_fc_weight"].T},
                           run.index_map)
    # A file of another optimizer: the layout names what was expected.
    sgd = run_of("sgd")
    wrong = I.MXNetStates(sgd.ckpt.states, run.ckpt.optimizer)
    with pytest.raises(ValueError, match=r"leaf 'net_bn_beta' \(MXNet index 0\): not the state "
                                         r"of MXNet's Adam .*expected \(mean, var\), got an "
                                         r"array float32\[3\]"):
        I.state_from_mxnet(wrong, sgd.trainable, sgd.index_map)
    # A float16 checkpoint's state without its master copies.
    fp16 = run_of("adam_fp16")
    stripped = I.MXNetStates({i: s[1] for i, s in fp16.ckpt.states.items()},
                             fp16.ckpt.optimizer)
    with pytest.raises(ValueError, match=r"expected \(float32 master, \(mean, var\)\), got "
                                         r"\(an array float32"):
        I.state_from_mxnet(stripped, fp16.trainable, fp16.index_map)
    with pytest.raises(ValueError, match=r"leaf 'net_bn_gamma' \(MXNet index 1\) has no "
                                         r"optimizer state"):
        I.state_from_mxnet(I.MXNetStates({0: run.ckpt.states[0]}, run.ckpt.optimizer),
                           p, run.index_map)
    # What is not an optimizer mxopt has (MXNet's base class) says which are.
    base = I.MXNetObject("mxnet.optimizer.optimizer.Optimizer", dict(run.ckpt.optimizer.fields))
    with pytest.raises(ValueError, match="is a mxnet.optimizer.optimizer.Optimizer; mxopt "
                                         "converts the MXNet optimizers AdaDelta, AdaGrad, Adam"):
        I.resume(I.MXNetStates(run.ckpt.states, base), p, run.index_map)
    # Per-parameter counts that one count cannot carry (Adam's bias correction).
    counts = dict(run.ckpt.optimizer["_index_update_count"])
    counts[7] -= 1
    skewed = I.MXNetStates(run.ckpt.states, run.ckpt.optimizer.replace(
        _index_update_count=counts, lr_scheduler=None))
    with pytest.raises(ValueError, match="reads each parameter's own count t"):
        I.state_from_mxnet(skewed, p, run.index_map)
    # A states-only file needs the optimizer and the count.
    only = I.MXNetStates(run.ckpt.states)
    with pytest.raises(ValueError, match="pass optimizer=optimizer_record"):
        I.state_from_mxnet(only, p, run.index_map)
    with pytest.raises(ValueError, match="pass count="):
        I.state_from_mxnet(only, p, run.index_map, optimizer=run.ckpt.optimizer)
    got = I.state_from_mxnet(only, p, run.index_map, optimizer=run.ckpt.optimizer, count=5)
    chex.assert_trees_all_equal(got.state, I.state_from_mxnet(run.ckpt, p, run.index_map).state)


def test_nadam_needs_the_trainers_update_order():
    run = run_of("nadam")
    structural = {s: run.trainable[f] for s, f in run.full.items() if f in run.trainable}
    index_map = I.trainer_index_map(run.meta["full_names"],
                                    structural_names=run.meta["structural_names"])
    with pytest.raises(ValueError, match="advances m_schedule on every parameter's update, in "
                                         "the Trainer's index order"):
        I.resume(run.ckpt, structural, index_map)
    # Adam has no such carry: structural names are fine there.
    adam = run_of("adam")
    structural = {s: adam.trainable[f] for s, f in adam.full.items() if f in adam.trainable}
    I.resume(adam.ckpt, structural, index_map)


def test_export_refuses_a_mismatched_optimizer():
    run = run_of("sgd")
    converted = I.state_from_mxnet(run.ckpt, run.trainable, run.index_map)
    with pytest.raises(ValueError, match="the optimizer is a mxnet.optimizer.optimizer.Adam "
                                         "but the state is a SGDState"):
        I.state_to_mxnet(converted.state, run.trainable, run.index_map,
                         run_of("adam").ckpt.optimizer)
    with pytest.raises(ValueError, match=r"momentum=0.0.*keeps a SGDNoMomentumState, but the "
                                         r"state is a SGDState"):
        I.state_to_mxnet(converted.state, run.trainable, run.index_map,
                         run.ckpt.optimizer.replace(momentum=0.0))
    with pytest.raises(TypeError, match="state must be the state of an mxopt optimizer"):
        I.state_to_mxnet(optax.adam(0.1).init(run.trainable), run.trainable, run.index_map)
    fp16 = run_of("sgd_fp16")
    converted = I.state_from_mxnet(fp16.ckpt, fp16.trainable, fp16.index_map)
    with pytest.raises(ValueError, match="master_leaves need an optimizer with multi_precision"):
        I.state_to_mxnet(converted.state, fp16.trainable, fp16.index_map,
                         fp16.ckpt.optimizer.replace(multi_precision=False))


# --------------------------------------------------------------------------------------
# The restricted unpickler: exactly MXNet's classes, and nothing runs
# --------------------------------------------------------------------------------------

# MXNet 1.9.1's opt_registry (tools/make_golden_interop_family.py checks this list
# against MXNet's), plus the base class.
REGISTRY = {
    "sgd": "SGD", "signum": "Signum", "ftml": "FTML", "lars": "LARS", "lbsgd": "LBSGD",
    "lamb": "LAMB", "dcasgd": "DCASGD", "nag": "NAG", "sgld": "SGLD", "ccsgd": "ccSGD",
    "adam": "Adam", "adagrad": "AdaGrad", "rmsprop": "RMSProp", "adadelta": "AdaDelta",
    "ftrl": "Ftrl", "adamax": "Adamax", "nadam": "Nadam", "test": "Test",
    "groupadagrad": "contrib.GroupAdaGrad"}


def _object_pickle(qualname, fields=b"X\x02\x00\x00\x00lrG?\xb9\x99\x99\x99\x99\x99\x9a"):
    module, name = qualname.rsplit(".", 1)
    return (b"\x80\x03c" + module.encode() + b"\n" + name.encode() + b"\n)\x81}(" + fields
            + b"ub.")


def test_the_allowed_classes_are_exactly_mxnets():
    want = {"mxnet.optimizer." + (c if c.startswith("contrib.") else f"optimizer.{c}")
            for c in REGISTRY.values()} | {"mxnet.optimizer.optimizer.Optimizer"}
    assert len(REGISTRY) == 19
    assert _mxformat.OPTIMIZER_CLASSES == want
    assert _mxformat.SCHEDULER_CLASSES == {f"mxnet.lr_scheduler.{c}" for c in (
        "LRScheduler", "FactorScheduler", "MultiFactorScheduler", "PolyScheduler",
        "CosineScheduler")}
    for qualname in sorted(_mxformat.OPTIMIZER_CLASSES | _mxformat.SCHEDULER_CLASSES):
        record = I.restricted_loads(_object_pickle(qualname), qualname)
        assert isinstance(record, I.MXNetObject) and record.cls == qualname
        assert dict(record.fields) == {"lr": 0.1}


@pytest.mark.parametrize("qualname", [
    "mxnet.optimizer.optimizer.Updater", "mxnet.optimizer.optimizer.get_updater",
    "mxnet.optimizer.Adam",                 # a re-export: pickles name the defining module
    "mxnet.optimizer.contrib.Optimizer", "mxnet.lr_scheduler.logging",
    "mxnet.optimizer.optimizer.NDArray", "mxnet.gluon.Trainer", "mxopt.facade.Adam"])
def test_near_misses_are_refused(qualname):
    with pytest.raises(I.UnsafePickleError, match=f"refusing to load {qualname}"):
        I.restricted_loads(_object_pickle(qualname), "x.states")


@pytest.mark.parametrize("name", ["adam", "nadam_fp16", "sgd"])
def test_hostile_payload_in_a_family_checkpoint_runs_nothing(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = (b"cbuiltins\nexec\nX" + len(f"open({str(marker)!r}, 'w').close()").to_bytes(
        4, "little") + f"open({str(marker)!r}, 'w').close()".encode() + b"\x85R")
    genuine = read(f"{name}.mxopt.states")  # the checkpoint as mxopt writes it: protocol 3
    assert genuine[:2] == b"\x80\x03"  # no frames to patch
    data = genuine[:2] + b"(" + payload + genuine[2:-1] + b"t."
    with pytest.raises(I.UnsafePickleError, match="refusing to load builtins.exec"):
        I.loads_states(data, name)
    updater = mxopt.get_updater(mxopt.Adam())
    with pytest.raises(I.UnsafePickleError, match="refusing to load builtins.exec"):
        updater.set_states(data)
    assert updater.states == {} and type(updater.optimizer) is mxopt.Adam
    assert not marker.exists()


def test_class_form_names_the_optimizers_it_restores():
    run = run_of("adam")
    base = I.MXNetObject("mxnet.optimizer.optimizer.Optimizer", dict(run.ckpt.optimizer.fields))
    data = I.dumps_states(I.MXNetStates(run.ckpt.states, base))
    updater = mxopt.get_updater(mxopt.Adam())
    with pytest.raises(I.MXNetFormatError, match=r"the pickled optimizer \(mxnet.optimizer."
                                                 r"optimizer.Optimizer\) cannot be restored: .*"
                                                 r"mxopt converts the MXNet optimizers AdaDelta"):
        updater.set_states(data)
    assert updater.states == {} and type(updater.optimizer) is mxopt.Adam


@pytest.mark.parametrize("name", ["plain", "centered_lr_mult", "factor_scheduler",
                                  "float16_multi_precision"])
def test_generic_resume_continues_rmsprop_checkpoints(name):
    """RMSProp is one entry of the same table: interop.resume continues the
    RMSProp checkpoints of tests/golden/interop too (with per-leaf multipliers,
    where resume_rmsprop needs one call per multiplier group)."""
    g = os.path.join(GOLDEN_DIR, "interop")
    z = np.load(os.path.join(g, f"{name}.npz"))
    meta = json.loads(str(z["meta"]))
    params = I.load_params(os.path.join(g, f"{name}.params"))
    ckpt = I.load_states(os.path.join(g, f"{name}.states"))
    index_map = I.trainer_index_map(meta["full_names"], structural_names=list(params))
    index_of = {v: k for k, v in index_map.items()}
    trainable = {k: v for k, v in params.items() if "running_" not in k}
    resumed = I.resume(ckpt, trainable, index_map, param_lr_mult={
        index_of[k]: v for k, v in meta["config"]["lr_mult"].items()})
    assert resumed.alias == "rmsprop"
    tx = resumed.transformation()
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
        *tx.update(g, s, p)))
    p, state = resumed.params, resumed.state
    for t in range(meta["steps_after"]):
        p, state = step(p, state, {k: z[f"grad/{t}/{k}"] for k in trainable})
    for k in trainable:
        assert_weight(p[k], z[f"final/{k}"], k)


def test_the_format_table_covers_every_mxnet_optimizer_mxopt_has():
    """Adding an MXNet optimizer to mxopt (issue 18's eight) means adding its entry to
    _mxformat.OPTIMIZER_FORMATS; this fails until it is there."""
    mxnet_names = {c.rsplit(".", 1)[1] for c in _mxformat.OPTIMIZER_CLASSES} - {"Optimizer"}
    mxopt_classes = {k.__name__ for k in mxopt.Optimizer.opt_registry.values()
                     if k.__module__ == "mxopt.facade"}
    assert mxopt_classes & mxnet_names == set(_mxformat.OPTIMIZER_FORMATS)
    for name, fmt in _mxformat.OPTIMIZER_FORMATS.items():
        assert callable(getattr(mxopt.alias, fmt.alias)), name
        for state in fmt.states:
            fields = getattr(mxopt.alias, state)._fields
            assert fields[0] == "count", (name, state)
            assert {f for f, _ in fmt.carry} <= set(fields), (name, state)
        record = I.optimizer_record(name)
        assert I.optimizer_alias(record) == fmt.alias
        opt = mxopt.facade.optimizer_from_mxnet(record)
        assert type(opt).__name__ == name
        # ... and the class form writes the record back.
        assert dict(mxopt.facade.optimizer_to_mxnet(opt).fields) == dict(record.fields)


# --------------------------------------------------------------------------------------
# SGLD: MXNet's noise comes from its global mx.random, mxopt's from a key
# --------------------------------------------------------------------------------------

def _drift_of(step, params, state, grads):
    """mxopt's update minus its noise: the same step on zero weights and gradients
    draws the same noise (the same key) and no drift."""
    update, _ = step(grads, state, params)
    noise, _ = step(jax.tree.map(jnp.zeros_like, grads), state,
                    jax.tree.map(jnp.zeros_like, params))
    return jax.tree.map(lambda u, n: u - n, update, noise)


def test_sgld_resume_continues_mxnets_deterministic_part():
    """A resumed SGLD matches MXNet in all it can: the drift -lr/2 * (g + wd * w),
    step by step from MXNet's own weights (the golden script recorded them and the
    noise MXNet drew), with MXNet's rates, multipliers, clipping and counts. The
    noise is mxopt's, from the key the caller passes."""
    run = run_of("sgld")
    with pytest.raises(ValueError, match=r"an MXNet checkpoint has no key, which mxopt.sgld "
                                         r"carries in its state: pass key="):
        run.resume()
    resumed = I.resume(run.ckpt, run.trainable, run.index_map, key=jax.random.key(3),
                       **run.mults)
    assert resumed.alias == "sgld" and resumed.kwargs["clip_gradient"] == 0.5
    assert resumed.state.key.tolist() == jax.random.key_data(jax.random.key(3)).tolist()
    tx = resumed.transformation()
    step = jax.jit(tx.update)
    state = resumed.state
    steps = run.meta["steps_after"]
    largest = 0.0
    for t in range(steps):
        before = {run.full[s]: run.z[f"before/{t}/{s}"] for s in run.meta["structural_names"]
                  if run.full[s] in run.trainable}
        grads = run.grads(t)
        drift = _drift_of(step, before, state, grads)
        for k, w in before.items():
            after = (run.z[f"before/{t + 1}/{[s for s, f in run.full.items() if f == k][0]}"]
                     if t + 1 < steps else run.final(k))
            want = (after - run.z[f"noise/{t}/{run.index_of[k]}"]) - w  # MXNet's drift
            np.testing.assert_allclose(drift[k], want, rtol=RTOL, atol=ATOL, err_msg=(t, k))
            largest = max(largest, float(np.abs(want).max()))
        _, state = step(grads, state, before)
    assert largest > 1e-3  # a drift to see (lr / 2 * the clip bound is 2.5e-3)
    assert int(state.count) == run.meta["final_num_update"]


def test_sgld_export_and_handoff():
    """The export drops the key (MXNet's state is None) and is the file MXNet
    continued from; the handoff is reproducible from its key (the golden script
    resumed with key=jax.random.key(7), and MXNet loaded what mxopt wrote)."""
    run = run_of("sgld")
    key = jax.random.key(7)
    converted = I.state_from_mxnet(run.ckpt, run.trainable, run.index_map, key=key)
    exported = I.state_to_mxnet(converted.state, converted.params, run.index_map,
                                run.ckpt.optimizer)
    assert I.dumps_states(exported) == read("sgld.mxopt.states")
    assert all(v is None for v in exported.states.values())
    resumed = I.resume(run.ckpt, run.trainable, run.index_map, key=key, **run.mults)
    step = jitted_step("sgld", resumed.transformation())
    params, state = resumed.params, resumed.state
    for t in range(run.meta["handoff_steps"]):
        params, state = step(params, state, run.grads(t))
    exported = I.state_to_mxnet(state, params, run.index_map, run.ckpt.optimizer)
    want = I.load_states(golden("sgld.jax.states"))
    assert dict(exported.optimizer.fields) == dict(want.optimizer.fields)
    assert dict(exported.states) == dict(want.states)
    weights = I.load_params(golden("sgld.jax.params"))
    for k, v in params.items():
        assert_weight(v, weights[[s for s, f in run.full.items() if f == k][0]], k)
    with pytest.raises(ValueError, match=r"key= is for optimizers whose state carries one "
                                         r"\(SGLD's PRNG key\); mxopt.adam has none"):
        I.resume(run_of("adam").ckpt, run_of("adam").trainable, run_of("adam").index_map,
                 key=key)


def test_sgld_class_form_restores_with_a_key():
    """Updater.set_states makes an SGLD with MXNet's counts and the caller's key
    (default: the class's documented PRNGKey(0)); its first step's drift is MXNet's
    and get_states writes the file MXNet continued from."""
    run = run_of("sgld")
    data = read("sgld.states")
    updater = mxopt.get_updater(mxopt.Adam())
    updater.set_states(data)
    assert type(updater.optimizer) is mxopt.SGLD
    assert updater.optimizer.key.tolist() == jax.random.PRNGKey(0).tolist()
    assert updater.get_states(dump_optimizer=True, mxnet=True) == read("sgld.mxopt.states")
    updater.set_states(data, key=jax.random.key(5))
    opt = updater.optimizer
    assert opt.key.tolist() == jax.random.key_data(jax.random.key(5)).tolist()
    assert opt.num_update == run.meta["final_num_update"] - run.meta["steps_after"]
    opt.param_dict = {i: _Param(run.mults["param_lr_mult"].get(i, 1.0),
                                run.mults["param_wd_mult"].get(i, 1.0))
                      for i in set(run.mults["param_lr_mult"]) | set(run.mults["param_wd_mult"])}
    grads = run.grads(0)
    for k in sorted(run.trainable, key=run.index_of.get):  # the Trainer's order
        i, w, key = run.index_of[k], jnp.asarray(run.trainable[k]), opt.key
        new = updater(i, jnp.asarray(grads[k]), w)
        opt.key, opt._index_update_count[i] = key, opt._index_update_count[i] - 1
        noise = updater(i, jnp.zeros_like(w), jnp.zeros_like(w))  # same key, no drift
        structural = [s for s, f in run.full.items() if f == k][0]
        want = (run.z[f"before/1/{structural}"] - run.z[f"noise/0/{i}"]) - run.trainable[k]
        np.testing.assert_allclose(np.asarray(new - w) - np.asarray(noise), want, rtol=RTOL,
                                   atol=ATOL, err_msg=k)
    with pytest.raises(I.MXNetFormatError, match="key= is for SGLD, whose state carries one; "
                                                 "Adam has none"):
        mxopt.get_updater(mxopt.SGD()).set_states(read("adam.states"), key=jax.random.key(1))


def test_part2_layouts_that_cannot_map_fail_naming_the_leaf():
    # LARS: a Gluon Trainer gives MXNet no names, and then every parameter takes
    # the trust ratio (keep_rate_names=()); where MXNet knew the names, they and
    # the leaf names must agree on which keep their rate.
    lars = run_of("lars")
    assert lars.resume().kwargs["keep_rate_names"] == ()
    named = lars.ckpt.optimizer.replace(idx2name={i: f"p{i}" for i in lars.index_map})
    with pytest.raises(ValueError, match=r"leaf 'net_bn_beta' \(MXNet index 0\): MXNet's LARS "
                                         r"applies the trust ratio to it, named 'p0' "
                                         r"\(idx2name\).*nest each one a level deeper"):
        I.resume(I.MXNetStates(lars.ckpt.states, named), lars.trainable, lars.index_map)
    # LBSGD: one num_cums for the tree; MXNet's per-index call counts must agree.
    lbsgd = run_of("lbsgd")
    cumgrads = {i: dict(c) for i, c in lbsgd.ckpt.optimizer["cumgrads"].items()}
    first = next(iter(cumgrads))
    cumgrads[first]["num_cums"] += 1
    skewed = I.MXNetStates(lbsgd.ckpt.states, lbsgd.ckpt.optimizer.replace(cumgrads=cumgrads))
    with pytest.raises(ValueError, match=r"LBSGD call counts \(cumgrads num_cums\) .* differ"):
        I.state_from_mxnet(skewed, lbsgd.trainable, lbsgd.index_map)
    assert isinstance(lbsgd.ckpt.optimizer["cumgrads"][first]["cum_grad"], np.ndarray)
    plain_lb = run_of("lbsgd_plain")  # checkpointed right after an update: MXNet's int 0
    assert {c["cum_grad"] for c in plain_lb.ckpt.optimizer["cumgrads"].values()} == {0}
    # GroupAdaGrad: the export checks the (rows, 1) history against what init builds.
    g = run_of("groupadagrad")
    state = I.state_from_mxnet(g.ckpt, g.trainable, g.index_map).state
    wide = state._replace(history=jax.tree.map(jnp.zeros_like, g.trainable))
    with pytest.raises(ValueError, match=r"leaf 'net_fc_weight': state.history is "
                                         r"float32\[4, 6\] but mxopt.groupadagrad keeps "
                                         r"float32\[4, 1\]"):
        I.state_to_mxnet(wide, g.trainable, g.index_map, g.ckpt.optimizer)
    # DCASGD: MXNet's (None, weight_previous), exactly.
    d = run_of("dcasgd")
    broken = I.MXNetStates({i: s[1] for i, s in d.ckpt.states.items()}, d.ckpt.optimizer)
    with pytest.raises(ValueError, match=r"expected \(None, weight_previous\), got an array"):
        I.state_from_mxnet(broken, d.trainable, d.index_map)


def test_states_only_export_of_every_variant():
    """optimizer=None writes the states alone (dump_optimizer=False): the layout
    follows the state's variant, with no record to say it."""
    p = {"w": jnp.ones((2, 3), jnp.float32)}
    for tx, want in [(mxopt.sgd(0.1, momentum=0.9), "array"), (mxopt.sgd(0.1), None),
                     (mxopt.signum(0.1, momentum=0.0), None),
                     (mxopt.rmsprop(centered=True), ("array", "array", "array")),
                     (mxopt.lars(momentum=0.9), "array"), (mxopt.lbsgd(momentum=0.5), "array"),
                     (mxopt.dcasgd(), (None, "array")), (mxopt.groupadagrad(), "array"),
                     (mxopt.sgld(key=jax.random.key(0)), None),
                     (mxopt.test_optimizer(), "array")]:
        entry = I.state_to_mxnet(tx.init(p), p, {0: "w"}).states[0]
        kind = jax.tree.map(lambda a: "array", entry) if entry is not None else None
        assert kind == want, (tx, entry)
