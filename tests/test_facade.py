"""The MXNet-style class API: mxopt.RMSProp, registry, Updater."""
import itertools
import json
import os
import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mxopt
from mxopt import reference
from tests.conftest import GOLDEN_DIR

_FACADE = np.load(os.path.join(GOLDEN_DIR, "rmsprop_facade.npz"))
_META = json.loads(str(_FACADE["meta"]))


class _Mults:
    def __init__(self, lr_mult, wd_mult):
        self.lr_mult, self.wd_mult = lr_mult, wd_mult


def _build(scenario):
    kwargs = dict(scenario["kwargs"])
    if scenario.get("idx2name"):
        kwargs["param_idx2name"] = dict(enumerate(_META["names"]))
    if "param_dict" in scenario:
        kwargs["param_dict"] = {int(k): _Mults(*v) for k, v in scenario["param_dict"].items()}
    if "sym_attr_dict" in scenario:
        kwargs["sym"] = scenario["sym_attr_dict"]
    if "scheduler" in scenario:
        kwargs["lr_scheduler"] = mxopt.lr_scheduler.FactorScheduler(**scenario["scheduler"])
        if kwargs["lr_scheduler"].base_lr != kwargs.get("learning_rate", 0.001):
            with pytest.warns(UserWarning, match="overwritten by ``learning_rate``"):
                return mxopt.RMSProp(**kwargs)
    return mxopt.RMSProp(**kwargs)


@pytest.mark.parametrize("s", range(len(_META["scenarios"])),
                         ids=[sc["name"] for sc in _META["scenarios"]])
def test_golden_scenarios_through_the_updater(s):
    scenario = _META["scenarios"][s]
    dtype = jnp.dtype(scenario.get("dtype", "float32"))
    opt = _build(scenario)
    updater = mxopt.get_updater(opt)
    n = len(_META["names"])
    weights = [jnp.asarray(_FACADE[f"p{i}_w0"]).astype(dtype) for i in range(n)]
    for step in range(1, _META["steps"] + 1):
        for key, value in scenario["events"].get(str(step), {}).items():
            if key == "set_learning_rate":
                opt.set_learning_rate(value)
            else:
                getattr(opt, key)({int(k) if k.isdigit() else k: m for k, m in value.items()})
        for i in range(n):
            grad = jnp.asarray(_FACADE[f"p{i}_grads"][step - 1]).astype(dtype)
            weights[i] = updater(i, grad, weights[i])
    assert opt.num_update == scenario["num_update"]
    assert opt.learning_rate == scenario["learning_rate"]
    for i in range(n):
        got, want = np.asarray(weights[i]), _FACADE[f"s{s}_p{i}_weight"]
        assert got.dtype == want.dtype
        if scenario["kwargs"].get("clip_weights"):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        else:  # one numerical code path, MXNet's rounding: bit for bit
            np.testing.assert_array_equal(got, want)


class PyRMSProp(mxopt.Optimizer):
    """Reference optimizer in the style of MXNet's test_optimizer.py: MXNet's
    Python-side bookkeeping (inherited) around the NumPy kernels."""

    def __init__(self, learning_rate=0.001, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
                 centered=False, clip_weights=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.gamma1, self.gamma2, self.epsilon = gamma1, gamma2, epsilon
        self.centered, self.clip_weights = centered, clip_weights

    def create_state(self, index, weight):
        return tuple(np.zeros(weight.shape, np.asarray(weight).dtype)
                     for _ in range(3 if self.centered else 1))

    def update(self, index, weight, grad, state):
        self._update_count(index)
        kw = dict(lr=self._get_lr(index), wd=self._get_wd(index), gamma1=self.gamma1,
                  epsilon=self.epsilon, rescale_grad=self.rescale_grad,
                  clip_gradient=self.clip_gradient, clip_weights=self.clip_weights)
        weight, grad = np.asarray(weight), np.asarray(grad)
        if self.centered:
            w, *state = reference.rmspropalex_update(weight, grad, *state,
                                                     gamma2=self.gamma2, **kw)
        else:
            w, *state = reference.rmsprop_update(weight, grad, *state, **kw)
        return jnp.asarray(w), tuple(state)


_GRID = list(itertools.product(
    [{}, {"clip_weights": 0.01}],
    [{}, {"clip_gradient": 0.4}, {"clip_gradient": 0.5}],
    [{}, {"centered": False}, {"centered": True}],
    [{}, {"rescale_grad": 0.14}, {"rescale_grad": 0.8}],
    [{}, {"wd": 0.03}, {"wd": 0.05}, {"wd": 0.07}],
    [{}, {"multi_precision": False}, {"multi_precision": True}],
))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_rms_option_grid_against_python_reference(dtype):
    # MXNet's test_rms: the same grid, float16 only with multi_precision.
    rng = np.random.RandomState(0)
    shape = (3, 4, 5)
    checked = 0
    for options in _GRID:
        kwargs = {k: val for opt in options for k, val in opt.items()}
        if dtype == np.float16 and not kwargs.get("multi_precision"):
            continue
        w0 = rng.uniform(-1, 1, size=shape).astype(dtype)
        grads = [rng.uniform(-1, 1, size=shape).astype(dtype) for _ in range(3)]
        results = []
        for opt in (PyRMSProp(**kwargs), mxopt.RMSProp(**kwargs)):
            updater = mxopt.get_updater(opt)
            w = jnp.asarray(w0)
            for g in grads:
                w = updater(0, jnp.asarray(g), w)
            results.append((np.asarray(w), updater.states[0]))
        (w_ref, s_ref), (w_got, s_got) = results
        assert w_got.dtype == dtype
        if kwargs.get("clip_weights"):  # within an ulp (of float16, for float16 weights)
            tol = dict(rtol=2 ** -10, atol=2 ** -24) if dtype == np.float16 else dict(
                rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(w_got, w_ref, err_msg=str(kwargs), **tol)
        else:
            np.testing.assert_array_equal(w_got, w_ref, err_msg=str(kwargs))
        for a, b in zip(jax.tree.leaves(s_got), jax.tree.leaves(s_ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked == (len(_GRID) // 3 if dtype == np.float16 else len(_GRID))


def test_registry_and_create():
    assert mxopt.Optimizer.opt_registry["rmsprop"] is mxopt.RMSProp
    assert isinstance(mxopt.create("RMSProp", learning_rate=0.1), mxopt.RMSProp)
    assert isinstance(mxopt.Optimizer.create_optimizer("rmsprop"), mxopt.RMSProp)
    with pytest.raises(ValueError, match=r"Cannot find optimizer nosuchopt: the registered "
                                         r"optimizers are \[.*'rmsprop'.*\]"):
        mxopt.create("nosuchopt")

    class MyOpt(mxopt.Optimizer):
        pass

    try:
        assert mxopt.register(MyOpt) is MyOpt
        assert isinstance(mxopt.create("myopt"), MyOpt)
        with pytest.warns(UserWarning, match="overriding"):
            mxopt.register(MyOpt)
    finally:
        mxopt.Optimizer.opt_registry.pop("myopt")


def test_defaults_and_learning_rate_rules():
    opt = mxopt.RMSProp()
    assert (opt.lr, opt.gamma1, opt.gamma2, opt.epsilon, opt.centered, opt.clip_weights) == (
        0.001, 0.9, 0.9, 1e-8, False, None)
    assert (opt.wd, opt.rescale_grad, opt.clip_gradient, opt.num_update) == (0.0, 1.0, None, 0)
    assert mxopt.Optimizer().lr == 0.01
    opt.set_learning_rate(0.5)
    assert opt.learning_rate == 0.5

    class Const:
        base_lr = 0.3

        def __call__(self, num_update):
            return self.base_lr

    sched = Const()
    # RMSProp's default lr overrides base_lr, as in MXNet, which prints this message;
    # mxopt warns instead, so that it can be filtered.
    with pytest.warns(UserWarning, match=r"overwritten by ``learning_rate``.*0\.3 -> 0\.001"):
        opt = mxopt.RMSProp(lr_scheduler=sched)
    assert sched.base_lr == 0.001
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mxopt.RMSProp(learning_rate=0.001, lr_scheduler=sched)  # agrees: no warning
    # Where MXNet raises a warning as an exception, so does mxopt, saying what to do.
    with pytest.raises(UserWarning, match="LRScheduler.*Change the scheduler instead"):
        opt.set_learning_rate(0.1)
    with pytest.raises(DeprecationWarning, match="use set_lr_mult"):
        opt.set_lr_scale({})


def test_idx2name_default_wd_rule_and_precedence():
    opt = mxopt.RMSProp(wd=0.1, param_idx2name={0: "fc_weight", 1: "fc_bias", 2: "bn_gamma"},
                        param_dict={2: _Mults(3.0, 0.5)})
    assert [opt._get_wd(i) for i in range(3)] == [0.1, 0.0, 0.1 * 0.5]
    opt.set_lr_mult({"fc_weight": 2.0, 1: 4.0})
    assert [opt._get_lr(i) for i in range(3)] == [0.001 * 2.0, 0.001 * 4.0, 0.001 * 3.0]
    opt = mxopt.RMSProp(sym={"fc_weight": {"__lr_mult__": "2", "__wd_mult__": "0"}},
                        param_idx2name={0: "fc_weight"}, wd=0.1)
    assert opt._get_lr(0) == 0.002 and opt._get_wd(0) == 0.0


def test_update_returns_new_weight_and_state_and_counts():
    opt = mxopt.RMSProp(learning_rate=0.1, centered=True)
    w = jnp.ones(3)
    state = opt.create_state(0, w)
    assert len(state) == 3
    new_w, new_state = opt.update(0, w, jnp.ones(3), state)
    assert float(new_w[0]) < 1.0 and len(new_state) == 3
    w1, state1 = opt.update(1, w, jnp.ones(3), state)
    opt.update(1, w1, jnp.ones(3), state1)
    assert opt._index_update_count == {0: 1, 1: 2} and opt.num_update == 2


def test_no_recompilation_when_hyperparameters_change():
    opt = mxopt.RMSProp(learning_rate=0.1, param_idx2name={0: "a_weight", 1: "b_weight"})
    updater = mxopt.get_updater(opt)
    w = [jnp.ones(4), jnp.ones(4)]
    w = [updater(i, jnp.ones(4), w[i]) for i in range(2)]
    before = mxopt.facade._kernel_step._cache_size()
    for k in range(5):
        opt.set_learning_rate(0.1 / (k + 1))
        opt.set_lr_mult({"a_weight": float(k)})
        opt.set_wd_mult({"b_weight": 0.5 * k})
        opt.rescale_grad = 1.0 / (k + 1)
        opt.clip_gradient = None if k % 2 else 0.5
        w = [updater(i, jnp.ones(4), w[i]) for i in range(2)]
    assert mxopt.facade._kernel_step._cache_size() == before


@pytest.mark.parametrize("dump_optimizer", [False, True])
def test_get_set_states_round_trip_mid_run(dump_optimizer):
    rng = np.random.RandomState(0)
    grads = [jnp.asarray(rng.normal(size=5), jnp.float32) for _ in range(10)]

    def make():
        return mxopt.get_updater(mxopt.RMSProp(learning_rate=0.05, centered=True, wd=0.01,
                                               multi_precision=True))

    full, w_full = make(), jnp.ones(5, jnp.float16)
    for g in grads:
        w_full = full(0, g.astype(jnp.float16), w_full)
    first, w = make(), jnp.ones(5, jnp.float16)
    for g in grads[:4]:
        w = first(0, g.astype(jnp.float16), w)
    blob = first.get_states(dump_optimizer=dump_optimizer)
    second = make()
    second.set_states(blob)
    if not dump_optimizer:  # counts live in the optimizer: carry them over by hand
        second.optimizer = pickle.loads(pickle.dumps(first.optimizer))
    for g in grads[4:]:
        w = second(0, g.astype(jnp.float16), w)
    np.testing.assert_array_equal(np.asarray(w), np.asarray(w_full))
    assert second.optimizer.num_update == 10


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mxopt_pwned",))


def test_set_states_refuses_arbitrary_objects(tmp_path):
    marker = "/tmp/mxopt_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    updater = mxopt.get_updater(mxopt.RMSProp())
    with pytest.raises(mxopt.interop.UnsafePickleError,
                       match="refusing to load (posix|os).system"):
        updater.set_states(pickle.dumps({0: _Evil()}))
    assert not os.path.exists(marker)
    with pytest.raises(TypeError):
        updater.set_states("not bytes")


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(gamma1=1.0), ValueError, "gamma1"), (dict(epsilon=-1.0), ValueError, "epsilon"),
    (dict(clip_weights=-1.0), ValueError, "clip_weights"),
    (dict(learning_rate="fast"), TypeError, "learning_rate"),
    (dict(wd=-1.0), ValueError, "wd"), (dict(begin_num_update=-1), ValueError, "begin_num_update"),
    (dict(param_idx2name=[1]), TypeError, "param_idx2name"),
    (dict(centered=1), TypeError, "centered"), (dict(momentum=0.9), TypeError, "momentum"),
])
def test_bad_constructor_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        mxopt.RMSProp(**kwargs)


def test_mismatched_grad_names_the_index():
    opt = mxopt.RMSProp()
    w = jnp.ones(3)
    with pytest.raises(ValueError, match="index 7"):
        opt.update(7, w, jnp.ones(4), opt.create_state(7, w))


def test_mxnet_style_script_ports_with_only_the_weight_change():
    # An MXNet 1.9.1 script, ported: `import mxnet as mx` -> `import mxopt`, and
    # `updater(i, g, w)` -> `w = updater(i, g, w)`.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer = mxopt.create("rmsprop", learning_rate=0.01, centered=True,
                                 rescale_grad=1.0 / 8, wd=1e-4, clip_gradient=5.0,
                                 param_idx2name={0: "fc1_weight", 1: "fc1_bias"})
        updater = mxopt.get_updater(optimizer)
    x = jnp.linspace(-1, 1, 8)[:, None]
    y = 3 * x + 1
    params = [jnp.zeros((1, 1)), jnp.zeros(1)]

    def loss(params):
        return jnp.sum((x @ params[0] + params[1] - y) ** 2)

    first = float(loss(params))
    for _ in range(300):
        grads = jax.grad(loss)(params)
        for i in range(2):
            params[i] = updater(i, grads[i], params[i])
    assert float(loss(params)) < 0.01 * first


# --------------------------------------------------------------------------------------
# Porting traps (issue 16)
# --------------------------------------------------------------------------------------

def _loss_grads(params):
    return [2 * p for p in params]


def test_dropped_result_warns_once_naming_the_parameter_and_the_fix():
    opt = mxopt.RMSProp(learning_rate=0.1, param_idx2name={0: "fc1_weight", 1: "fc1_bias"})
    updater = mxopt.get_updater(opt)
    params = [jnp.ones(3), jnp.ones(2)]
    with pytest.warns(UserWarning) as caught:
        for _ in range(4):  # MXNet style: the result is dropped, nothing trains
            for i, g in enumerate(_loss_grads(params)):
                updater(i, g, params[i])
    assert len(caught) == 1  # once per optimizer
    message = str(caught[0].message)
    assert "parameter 'fc1_weight' (index 0)" in message
    assert "`weight = updater(index, grad, weight)`" in message
    assert caught[0].filename == __file__  # attributed to the caller's line
    # The class API's update has its own fix; without names the index is named.
    opt = mxopt.RMSProp(centered=True)
    w = jnp.ones(3)
    state = opt.create_state(5, w)
    with pytest.warns(UserWarning, match=r"index 5 .*`weight, state = optimizer.update\("):
        for _ in range(3):
            opt.update(5, w, jnp.ones(3), state)


def test_correct_loops_never_warn_and_keep_nothing_alive():
    import gc
    import weakref

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for multi_precision in (False, True):
            opt = mxopt.RMSProp(learning_rate=0.1, multi_precision=multi_precision,
                                param_idx2name={0: "fc1_weight"})
            updater = mxopt.get_updater(opt)
            params = [jnp.ones(3, jnp.float16 if multi_precision else jnp.float32)]
            for _ in range(4):
                params = [updater(i, g, params[i]) for i, g in enumerate(_loss_grads(params))]
            w, state = params[0], opt.create_state_multi_precision(1, params[0])
            for _ in range(4):
                w, state = opt.update_multi_precision(1, w, jnp.ones_like(w), state)
            # NumPy weights (converted on every call) are checked as given.
            w = np.ones(3, np.float32)
            opt2 = mxopt.RMSProp()
            state = opt2.create_state(0, w)
            for _ in range(3):
                w, state = opt2.update(0, w, np.ones(3, np.float32), state)
    # The check holds no reference to the arrays it was given.
    old = jnp.ones(3)
    ref = weakref.ref(old)
    new = updater(7, jnp.ones(3), old)
    del old
    gc.collect()
    assert ref() is None and new is not None


def test_lr_and_wd_mult_typos_warn_with_a_suggestion():
    opt = mxopt.RMSProp(param_idx2name={0: "fc1_weight", 1: "fc1_bias"})
    with pytest.warns(UserWarning, match=r"args_lr_mult: no parameter matches 'fc1_wieght' "
                                         r"\(did you mean 'fc1_weight'\?\).*MXNet ignores"):
        opt.set_lr_mult({"fc1_wieght": 0.5, "fc1_bias": 2.0})
    assert opt.lr_mult == {"fc1_wieght": 0.5, "fc1_bias": 2.0}  # MXNet keeps it, unused
    with pytest.warns(UserWarning, match=r"args_wd_mult: no parameter matches 'fc2_bias'"):
        opt.set_wd_mult({"fc2_bias": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.set_lr_mult({"fc1_weight": 0.5, 1: 2.0})  # names and indices that exist
        opt.set_wd_mult({"fc1_bias": 0.0})
        # Names from sym count as parameters; without any names nothing can be checked.
        mxopt.RMSProp(sym={"conv_weight": {}}).set_lr_mult({"conv_weight": 0.1})
        mxopt.RMSProp().set_lr_mult({"anything": 0.1})


@pytest.mark.parametrize("centered", [False, True])
def test_class_api_state_mismatch_says_what_differs(centered):
    opt = mxopt.RMSProp(centered=centered)
    w = jnp.ones(3, jnp.float32)
    other = mxopt.RMSProp(centered=not centered).create_state(4, w)
    with pytest.raises(ValueError, match=r"index 4: the optimizer state does not match: got "
                                         rf".*\(a state of RMSProp\(centered={not centered}\)\)"):
        opt.update(4, w, jnp.ones(3, jnp.float32), other)
    with pytest.raises(ValueError, match=r"index 4: the optimizer state does not match: state "
                                         r"n is float32\[4\], the weight float32\[3\]"):
        opt.update(4, w, jnp.ones(3, jnp.float32), opt.create_state(4, jnp.ones(4, jnp.float32)))
    with pytest.raises(ValueError, match=r"index 4: .*state n is float16\[3\], the weight "
                                         r"float32\[3\]; create_state\(index, weight\)"):
        opt.update(4, w, jnp.ones(3, jnp.float32), opt.create_state(4, jnp.ones(3, jnp.float16)))
    with pytest.raises(ValueError, match=r"index 'w': the optimizer state does not match: got "
                                         r"NoneType"):
        opt.update("w", w, jnp.ones(3, jnp.float32), None)
    mp = mxopt.RMSProp(centered=centered, multi_precision=True)
    w16 = jnp.ones(3, jnp.float16)
    with pytest.raises(ValueError, match=r"index 4: the optimizer state does not match: "
                                         r"multi_precision .*float32 master copy"):
        mp.update_multi_precision(4, w16, jnp.ones(3, jnp.float16), mp.create_state(4, w16))
    assert opt.num_update == 0  # nothing was counted


def test_create_lists_the_registered_names():
    # An unknown name: the message lists what is registered.
    with pytest.raises(ValueError, match=r"Cannot find optimizer NoSuchOptimizer: the "
                                         r"registered optimizers are \[.*'adam', 'adamax', "
                                         r".*'ftml', 'ftrl', .*'lamb', 'lars', .*'nadam', "
                                         r".*'rmsprop', 'sgd', .*'signum'.*\]"):
        mxopt.create("NoSuchOptimizer")


def test_repr_shows_the_class_and_its_hyperparameters():
    opt = mxopt.RMSProp(learning_rate=0.01, centered=True, wd=1e-4, clip_weights=2.0,
                        lr_scheduler=mxopt.lr_scheduler.FactorScheduler(10, 0.5, base_lr=0.01))
    text = repr(opt)
    assert text.startswith("RMSProp(learning_rate=0.01, gamma1=0.9, gamma2=0.9, epsilon=1e-08, "
                           "centered=True, clip_weights=2.0, lr_scheduler=FactorScheduler(step=10")
    assert "wd=0.0001, rescale_grad=1.0, clip_gradient=None, multi_precision=False" in text
    assert repr(mxopt.Optimizer()).startswith("Optimizer(learning_rate=0.01, lr_scheduler=None")


# --------------------------------------------------------------------------------------
# Corrupted checkpoints: every reader answers with a ValueError saying what is wrong
# --------------------------------------------------------------------------------------

_INTEROP = os.path.join(GOLDEN_DIR, "interop")


def _own_states():
    sched = mxopt.lr_scheduler.FactorScheduler(3, 0.5, base_lr=0.05)
    opt = mxopt.RMSProp(learning_rate=0.05, centered=True, multi_precision=True,
                        lr_scheduler=sched, param_idx2name={0: "a_weight", 1: "b_bias"})
    updater = mxopt.get_updater(opt)
    ws = [jnp.ones(3, jnp.float16), jnp.ones(2, jnp.float32)]
    for _ in range(2):
        ws = [updater(i, jnp.full_like(w, 0.5), w) for i, w in enumerate(ws)]
    return updater.get_states(dump_optimizer=True)


def _fuzz_inputs():
    """Real files (MXNet 1.9.1's, mxopt's own) and deterministic mutations of them:
    bit flips, byte sets, truncations, deletions, insertions, inflated lengths."""
    import random

    bases = {"own": _own_states()}
    for name in ("plain.states", "float16_multi_precision.states", "factor_scheduler.states",
                 "plain.mxopt.states"):
        with open(os.path.join(_INTEROP, name), "rb") as f:
            bases[name] = f.read()
    rng = random.Random(16)
    out = [("empty", b""), ("garbage", b"garbage"), ("text", b"not a pickle\n")]
    for name, data in bases.items():
        for k in range(150):
            data2 = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(data2)) if data2 else 0
                kind = rng.choice(["flip", "set", "truncate", "delete", "insert", "inflate"])
                if kind == "flip" and data2:
                    data2[pos] ^= 1 << rng.randrange(8)
                elif kind == "set" and data2:
                    data2[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
                elif kind == "truncate":
                    del data2[pos:]
                elif kind == "delete":
                    del data2[pos:pos + rng.randint(1, 16)]
                elif kind == "insert":
                    data2[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
                else:  # a length field made huge: four 0xFF bytes somewhere
                    data2[pos:pos + 4] = b"\xff\xff\xff\x7f"
            out.append((f"{name}#{k}", bytes(data2)))
    return out


def test_corrupted_checkpoints_fail_with_a_value_error_fuzz():
    import time

    updater = mxopt.get_updater(mxopt.RMSProp())
    start, loaded, refused = time.perf_counter(), 0, 0
    for label, data in _fuzz_inputs():
        before = (updater.optimizer, updater.states)
        try:
            updater.set_states(data)
            loaded += 1
            assert isinstance(updater.optimizer, mxopt.Optimizer), label
            assert isinstance(updater.states, dict), label
        except ValueError as e:
            refused += 1
            assert str(e).startswith("set_states: "), (label, e)
            assert (updater.optimizer, updater.states) == before, label  # left unchanged
        try:
            mxopt.interop.loads_states(data, label)
        except ValueError as e:
            assert str(e).startswith(f"{label}: "), (label, e)
    assert refused > 400 and loaded > 10  # the mutations reach both outcomes
    assert time.perf_counter() - start < 60  # bounded: no read runs away


@pytest.mark.parametrize("data, match", [
    (b"", "not a valid pickle"),
    (b"garbage", "not a valid pickle"),
    (b"\x80\x04\x95" + (2 ** 40).to_bytes(8, "little") + b"N.", r"frame .* claims"),
    (b"\x80\x03B" + (2 ** 31).to_bytes(4, "little") + b"abc.", "not a valid pickle"),
    (pickle.dumps([1, 2]), "expected a dict of optimizer states"),
    (pickle.dumps(({}, mxopt.lr_scheduler.FactorScheduler(3))),
     r"second element of the \(states, optimizer\) pair is a mxopt.lr_scheduler"),
])
def test_set_states_refuses_bad_input_saying_why(data, match):
    with pytest.raises(ValueError, match=f"set_states: .*{match}"):
        mxopt.get_updater(mxopt.RMSProp()).set_states(data)


def test_set_states_checks_the_pickled_optimizer():
    good = _own_states()
    for old, new, match in [(b"gamma1", b"gamma7", r"lacks the attributes \['gamma1'\]"),
                            (b"rescale_grad", b"rescale_grae", "lacks the attributes"),
                            (b"warmup_mode", b"warmup_moda", "warmup_moda")]:
        assert good.count(old) == 1
        with pytest.raises(ValueError, match=f"set_states: the pickled optimizer "
                                             f"\\(mxopt.facade.RMSProp\\) cannot be restored: "
                                             f".*{match}"):
            mxopt.get_updater(mxopt.RMSProp()).set_states(good.replace(old, new))
    updater = mxopt.get_updater(mxopt.RMSProp())
    updater.set_states(good)
    opt = updater.optimizer
    assert opt.centered and opt.num_update == 2 and opt._index_update_count == {0: 2, 1: 2}
    assert opt._index_update_count is opt._all_index_update_counts[0]  # still shared
    assert opt.lr_scheduler.base_lr == 0.05 and updater.states[0][0].dtype == jnp.float32


@pytest.mark.parametrize("opt, kwargs, dtype", [
    ("sgd", dict(momentum=0.9), jnp.float32), ("sgd", dict(multi_precision=True), jnp.float16),
    ("lars", dict(momentum=0.9, multi_precision=True), jnp.float16),
    ("lamb", dict(wd=0.01), jnp.float32)])
def test_list_calls_where_mxnet_takes_them(opt, kwargs, dtype):
    """SGD, LARS and LAMB take a list of indices, as MXNet's update does; a list
    call is the calls index by index, states in MXNet's layout (the master where
    MXNet keeps it) included, except for LARS's momentum correction after a rate
    change (the whole list call sees it; test_family_lamb), so LARS runs at a
    steady rate here. LAMB's index by index is lists of one index: one index
    as such runs MXNet's lamb_update_phase1/2 (test_family_lamb)."""
    listed, single = (mxopt.create(opt, learning_rate=0.1, **kwargs, lr_scheduler=(
        None if opt == "lars" else mxopt.lr_scheduler.FactorScheduler(2, 0.5, base_lr=0.1)))
        for _ in "ab")
    w = [jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3) + k for k in range(2)]
    s = [listed.create_state_multi_precision(k, w[k]) for k in range(2)]
    ws, ss = list(w), list(s)
    for t in range(3):
        g = [jnp.full((2, 3), 0.25 * (t + 1 + k), dtype) for k in range(2)]
        w, s = listed.update_multi_precision([0, 1], w, g, s)
        for k in range(2):
            if opt == "lamb":
                [ws[k]], [ss[k]] = single.update_multi_precision([k], [ws[k]], [g[k]], [ss[k]])
            else:
                ws[k], ss[k] = single.update_multi_precision(k, ws[k], g[k], ss[k])
    assert isinstance(w, list) and isinstance(s, list)
    for a, b in zip(jax.tree.leaves((w, s)), jax.tree.leaves((ws, ss))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(s) == jax.tree.structure(ss)
    assert listed._index_update_count == single._index_update_count == {0: 3, 1: 3}


def test_list_calls_are_refused_where_mxnet_takes_one_index():
    opt = mxopt.Adam()
    w = [jnp.ones(3)] * 2
    states = [opt.create_state(k, w[k]) for k in range(2)]
    with pytest.raises(TypeError, match=r"index is a list, but MXNet's Adam updates one index "
                                        r"per call \(of MXNet's optimizers only LAMB, LARS, "
                                        r"SGD, ccSGD take a list of indices\)"):
        opt.update([0, 1], w, w, states)
    assert opt.num_update == 0
    sgd = mxopt.SGD()
    with pytest.raises(ValueError, match="lists must have the same length"):
        sgd.update([0, 1], w, w, [None])
    # The Updater hands list calls to those with an aggregate_num, one index at a
    # time to the others.
    for o in (mxopt.Adam(), mxopt.SGD(momentum=0.9)):
        assert mxopt.get_updater(o)([0, 1], w, w)[1].shape == (3,)


def test_class_defaults_are_the_format_tables():
    """The constructors' defaults are MXNet's, as the interop's table records
    them: a fresh class writes the fresh MXNet record."""
    for name in mxopt._mxformat.OPTIMIZER_FORMATS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ccSGD
            opt = mxopt.Optimizer.opt_registry[name.lower()]()
        assert (dict(mxopt.facade.optimizer_to_mxnet(opt).fields)
                == dict(mxopt.interop.optimizer_record(name).fields)), name
        assert opt.aggregate_num == mxopt._mxformat.OPTIMIZER_FORMATS[name].aggregate_num
    # The functional LARS splits a step as MXNet's Updater splits LARS's list call.
    assert mxopt._mxformat.OPTIMIZER_FORMATS["LARS"].aggregate_num == mxopt.alias.LARS_CHUNK


def test_lars_with_momentum_runs_mxnets_momentum_kernel_at_rate_zero():
    """MXNet picks LARS's kernel by ``momentum > 0``, not by the corrected
    momentum, so a call at base rate 0 (correction 0) still runs the momentum
    kernel: the weight stays and the buffer becomes 0 (MXNet 1.9.1 gives
    [[0, 0, 0], [-0, -0, -0]] here; it used to keep the buffer)."""
    opt = mxopt.LARS(learning_rate=0.1, momentum=0.9)
    w = jnp.linspace(-1, 1, 6, dtype=jnp.float32).reshape(2, 3)
    state = opt.create_state(0, w)
    for lr in (0.1, 0.1, 0.0):
        opt.set_learning_rate(lr)
        before = w
        (w,), (state,) = opt.update([0], [w], [jnp.full((2, 3), 0.5, jnp.float32)], [state])
    np.testing.assert_array_equal(np.asarray(w), np.asarray(before))
    np.testing.assert_array_equal(np.signbit(np.asarray(state)), [[False] * 3, [True] * 3])
    assert not np.asarray(state).any()
