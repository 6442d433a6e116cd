"""mxopt.lr_scheduler against MXNet 1.9.1: golden sequences and validation outcomes
written by tools/make_golden_schedulers.py, and property tests against a
transcription of MXNet's (mutating) scheduler classes."""
import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mxopt
from mxopt import lr_scheduler as lrs
from mxopt._mxnumbers import received_float, received_floats
from tests.conftest import GOLDEN_DIR

_DATA = np.load(os.path.join(GOLDEN_DIR, "schedulers.npz"))
_META = json.loads(str(_DATA["meta"]))
_SEQUENCES = list(enumerate(_META["sequences"]))
_OPTIMIZERS = list(enumerate(_META["optimizers"]))
STEPS = _META["steps"]


def _golden_sequence(i):
    """MXNet's float64 values for num_update = 0 .. STEPS - 1 (see the golden script)."""
    bits, runs = _DATA[f"seq{i}_bits"], _DATA[f"seq{i}_runs"]
    values = np.cumsum(np.cumsum(bits)).view(np.float64)
    out = np.repeat(values, runs)
    assert out.shape == (STEPS,)
    return out


def _kwargs(kwargs):
    return {k: tuple(v["__tuple__"]) if isinstance(v, dict) and "__tuple__" in v else v
            for k, v in kwargs.items()}


def _make(cfg):
    sched = getattr(lrs, cfg["cls"])(**_kwargs(cfg["kwargs"]))
    if "set_base_lr" in cfg:
        sched.base_lr = cfg["set_base_lr"]
    return sched


def _ids(items):
    return [cfg["id"] for _, cfg in items]


# ----------------------------------------------------------------- golden sequences

@pytest.mark.parametrize("i,cfg", _SEQUENCES, ids=_ids(_SEQUENCES))
def test_golden_sequence_exact_in_increasing_order(i, cfg):
    want = _golden_sequence(i)
    sched = _make(cfg)
    got = [sched(n) for n in range(STEPS)]
    assert all(type(x) is float for x in got)
    np.testing.assert_array_equal(np.array(got), want)


@pytest.mark.parametrize("i,cfg", _SEQUENCES, ids=_ids(_SEQUENCES))
def test_golden_sequence_exact_in_any_order(i, cfg):
    want = _golden_sequence(i)
    for order in (np.random.RandomState(i).permutation(STEPS), np.arange(STEPS)[::-1]):
        sched = _make(cfg)  # fresh: the first call is anywhere in the sequence
        got = np.empty(STEPS)
        for n in order:
            got[n] = sched(int(n))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int64])
def test_golden_sequences_jit_are_what_mxnets_kernel_receives(dtype):
    # int32 is optax's count; int64 (with jax_enable_x64) on every third one.
    configs = _SEQUENCES if dtype == jnp.int32 else _SEQUENCES[::3]
    scheds = [_make(cfg) for _, cfg in configs]
    # One compilation for all: every count at once, and a traced scalar count as
    # optax passes it.
    both = jax.jit(lambda counts, count: [(s(counts), s(count)) for s in scheds])
    counts = jnp.arange(STEPS, dtype=dtype)
    # MXNet's float64 rate, as its kernel parses str(rate) into a float
    # (dmlc::stof), which a jitted optimizer must reproduce: one number at a
    # time, the reference the tables' vectorised parse is held to.
    wants = {i: np.array([received_float(float(x)) for x in _golden_sequence(i)], np.float32)
             for i, _ in configs}
    for trial, n in enumerate(np.random.RandomState(0).randint(0, STEPS, size=6)):
        out = both(counts, jnp.asarray(n, dtype))
        for (i, cfg), (got, value) in zip(configs, out):
            want = wants[i]
            chex.assert_type([got, value], jnp.float32)
            chex.assert_shape(value, ())
            assert value == want[n], (cfg["id"], n)
            if trial == 0:
                # The host tables make it exact.
                np.testing.assert_array_equal(np.asarray(got), want, err_msg=cfg["id"])


@pytest.mark.parametrize("i,cfg", _SEQUENCES, ids=_ids(_SEQUENCES))
def test_golden_host_tables_are_mxnet_float64(i, cfg):
    # The vectorized float64 values the traced tables are cut from.
    np.testing.assert_array_equal(_make(cfg)._values64(np.arange(STEPS)), _golden_sequence(i))


def test_golden_covers_what_the_issue_asks():
    configs = [cfg for _, cfg in _SEQUENCES]
    for cls in ("FactorScheduler", "MultiFactorScheduler", "PolyScheduler", "CosineScheduler"):
        modes = {cfg["kwargs"].get("warmup_mode", "linear") for cfg in configs
                 if cfg["cls"] == cls and cfg["kwargs"].get("warmup_steps", 0) > 0}
        assert modes == {"linear", "constant"}, cls
        assert any(cfg["cls"] == cls and not cfg["kwargs"].get("warmup_steps") for cfg in configs)
    assert {cfg["kwargs"].get("pwr", 2) for cfg in configs
            if cfg["cls"] == "PolyScheduler"} >= {1, 2, 3}
    # FactorScheduler reaching stop_factor_lr, and a MultiFactor with several steps.
    i = next(i for i, cfg in _SEQUENCES if cfg["id"] == "factor-stop-reached")
    assert _golden_sequence(i)[-1] == 1e-8
    assert any(len(cfg["kwargs"]["step"]) >= 4 for cfg in configs
               if cfg["cls"] == "MultiFactorScheduler")


# ----------------------------------------------------------------------- validation

# Settings MXNet 1.9.1 accepts (or accepts and then crashes on when called) that
# mxopt rejects because they would silently mis-train.
MXOPT_ONLY_REJECTS = {
    "warmup-steps-bool", "base-lr-negative-warmup-negative", "base-lr-nan", "base-lr-inf",
    "warmup-begin-nan", "factor-step-float", "factor-step-bool", "factor-negative", "factor-nan",
    "stop-factor-lr-nan", "stop-factor-lr-inf", "multifactor-float-step",
    "multifactor-factor-negative", "poly-max-update-bool", "poly-warmup-equals-max-update",
    "poly-warmup-beyond-max-update", "poly-pwr-negative", "poly-pwr-nan", "poly-final-negative",
    "cosine-max-update-bool", "cosine-warmup-equals-max-update", "cosine-final-inf",
}
_VALIDATION = _META["validation"]


@pytest.mark.parametrize("case", _VALIDATION, ids=[c["id"] for c in _VALIDATION])
def test_validation_rejects_what_mxnet_rejects(case):
    mxnet_rejects = case["mxnet"].startswith("init:")
    build = lambda: getattr(lrs, case["cls"])(**_kwargs(case["kwargs"]))  # noqa: E731
    if mxnet_rejects or case["id"] in MXOPT_ONLY_REJECTS:
        # The extra list only holds settings MXNet accepts at construction.
        assert mxnet_rejects != (case["id"] in MXOPT_ONLY_REJECTS), case["mxnet"]
        with pytest.raises((TypeError, ValueError), match=case["arg"]):
            build()
    else:
        # Settings MXNet crashes on when called must be rejected up front.
        assert case["mxnet"] == "ok"
        assert case["arg"] is None
        build()


def test_validation_cases_cover_every_mxnet_check():
    outcomes = {c["id"]: c["mxnet"] for c in _VALIDATION}
    assert outcomes["warmup-begin-above-base"] == "init:ValueError"
    assert outcomes["warmup-steps-negative"] == "init:ValueError"
    assert outcomes["warmup-steps-float"] == "init:AssertionError"
    assert outcomes["warmup-mode-unknown"] == "init:ValueError"
    assert outcomes["factor-step-zero"] == "init:ValueError"
    assert outcomes["factor-above-one"] == "init:ValueError"
    assert outcomes["multifactor-empty"] == "init:AssertionError"
    assert outcomes["multifactor-decreasing"] == "init:ValueError"
    assert outcomes["multifactor-repeated"] == "init:ValueError"
    assert outcomes["multifactor-zero"] == "init:ValueError"
    assert outcomes["multifactor-factor-above-one"] == "init:ValueError"
    assert outcomes["poly-max-update-zero"] == "init:ValueError"
    assert outcomes["poly-max-update-float"] == "init:AssertionError"
    assert outcomes["cosine-max-update-zero"] == "init:ValueError"
    assert outcomes["poly-warmup-equals-max-update"] == "call:ZeroDivisionError"
    assert MXOPT_ONLY_REJECTS <= set(outcomes)


def test_numpy_integers_are_integers():
    # MXNet asserts isinstance(x, int), which numpy integers fail; mxopt takes them.
    sched = lrs.PolyScheduler(np.int64(100), warmup_steps=np.int32(10))
    assert sched.max_update == 100 and type(sched.max_update) is int
    assert sched(np.int64(50)) == sched(50)


def test_traced_hyperparameters_are_rejected():
    with pytest.raises(TypeError, match="base_lr"):
        jax.jit(lambda lr: lrs.CosineScheduler(10, base_lr=lr)(3))(0.1)


# ------------------------------------------------------------- MXNet's counting rule

def _opt_data(i):
    return {k: _DATA[f"opt{i}_{k}"] for k in ("w0", "grads", "nums", "lrs", "weights")}


def _optimizer_schedule(cfg):
    sched = getattr(lrs, cfg["cls"])(**cfg["kwargs"])
    # What mx.optimizer.Optimizer.__init__ does when learning_rate differs.
    if sched.base_lr != cfg["learning_rate"]:
        sched.base_lr = cfg["learning_rate"]
    return lrs.mxnet_schedule(sched, cfg["begin_num_update"])


@pytest.mark.parametrize("i,cfg", _OPTIMIZERS, ids=_ids(_OPTIMIZERS))
def test_mxnet_schedule_gives_the_rates_mxnet_used(i, cfg):
    data, schedule = _opt_data(i), _optimizer_schedule(cfg)
    steps = _META["opt_steps"]
    # MXNet reads scheduler(begin_num_update + k) at its k-th update.
    np.testing.assert_array_equal(data["nums"], cfg["begin_num_update"] + np.arange(1, steps + 1))
    got = [schedule(c) for c in range(steps)]
    np.testing.assert_array_equal(np.array(got), data["lrs"])
    traced = jax.jit(schedule)(jnp.arange(steps, dtype=jnp.int32))
    np.testing.assert_array_equal(np.asarray(traced), data["lrs"].astype(np.float32))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("i,cfg", _OPTIMIZERS, ids=_ids(_OPTIMIZERS))
def test_rmsprop_with_mxnet_schedule_matches_mxnet(i, cfg, jit):
    data = _opt_data(i)
    tx = mxopt.rmsprop(learning_rate=_optimizer_schedule(cfg), **_META["optimizer_kwargs"])
    params = jnp.asarray(data["w0"])
    state = tx.init(params)

    def step(params, state, grad):
        updates, state = tx.update(grad, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step) if jit else step
    for k, grad in enumerate(data["grads"]):
        params, state = step(params, state, jnp.asarray(grad))
        want = data["weights"][k]
        if jit:
            np.testing.assert_allclose(params, want, rtol=1e-5, atol=1e-6, err_msg=f"step {k}")
        else:
            np.testing.assert_array_equal(params, want, err_msg=f"step {k}")


# -------------------------------------------------- a transcription of MXNet's classes
# mxnet/lr_scheduler.py of MXNet 1.9.1 (Apache-2.0), logging dropped: objects that
# mutate as they are called. Called in increasing order they are the oracle.

class _MXBase:
    def __init__(self, base_lr=0.01, warmup_steps=0, warmup_begin_lr=0, warmup_mode="linear"):
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.warmup_final_lr = base_lr
        self.warmup_begin_lr = warmup_begin_lr
        self.warmup_mode = warmup_mode

    def get_warmup_lr(self, num_update):
        if self.warmup_mode == "linear":
            increase = (self.warmup_final_lr - self.warmup_begin_lr) \
                * float(num_update) / float(self.warmup_steps)
            return self.warmup_begin_lr + increase
        return self.warmup_begin_lr


class _MXFactor(_MXBase):
    def __init__(self, step, factor=1, stop_factor_lr=1e-8, **kw):
        super().__init__(**kw)
        self.step, self.factor, self.stop_factor_lr, self.count = step, factor, stop_factor_lr, 0

    def __call__(self, num_update):
        if num_update < self.warmup_steps:
            return self.get_warmup_lr(num_update)
        while num_update > self.count + self.step:
            self.count += self.step
            self.base_lr *= self.factor
            if self.base_lr < self.stop_factor_lr:
                self.base_lr = self.stop_factor_lr
        return self.base_lr


class _MXMultiFactor(_MXBase):
    def __init__(self, step, factor=1, **kw):
        super().__init__(**kw)
        self.step, self.cur_step_ind, self.factor, self.count = step, 0, factor, 0

    def __call__(self, num_update):
        if num_update < self.warmup_steps:
            return self.get_warmup_lr(num_update)
        while self.cur_step_ind <= len(self.step) - 1:
            if num_update > self.step[self.cur_step_ind]:
                self.count = self.step[self.cur_step_ind]
                self.cur_step_ind += 1
                self.base_lr *= self.factor
            else:
                return self.base_lr
        return self.base_lr


class _MXPoly(_MXBase):
    def __init__(self, max_update, pwr=2, final_lr=0, **kw):
        super().__init__(**kw)
        self.power, self.base_lr_orig, self.max_update = pwr, self.base_lr, max_update
        self.final_lr, self.max_steps = final_lr, max_update - self.warmup_steps

    def __call__(self, num_update):
        if num_update < self.warmup_steps:
            return self.get_warmup_lr(num_update)
        if num_update <= self.max_update:
            self.base_lr = self.final_lr + (self.base_lr_orig - self.final_lr) * \
                pow(1 - float(num_update - self.warmup_steps) / float(self.max_steps), self.power)
        return self.base_lr


class _MXCosine(_MXBase):
    def __init__(self, max_update, final_lr=0, **kw):
        super().__init__(**kw)
        self.base_lr_orig, self.max_update = self.base_lr, max_update
        self.final_lr, self.max_steps = final_lr, max_update - self.warmup_steps

    def __call__(self, num_update):
        if num_update < self.warmup_steps:
            return self.get_warmup_lr(num_update)
        if num_update <= self.max_update:
            self.base_lr = self.final_lr + (self.base_lr_orig - self.final_lr) * \
                (1 + math.cos(math.pi * (num_update - self.warmup_steps) / self.max_steps)) / 2
        return self.base_lr


_PORTS = {"FactorScheduler": _MXFactor, "MultiFactorScheduler": _MXMultiFactor,
          "PolyScheduler": _MXPoly, "CosineScheduler": _MXCosine}
_HORIZON = 400


@st.composite
def _warmup(draw, base_lr, longest=60):
    steps = draw(st.integers(0, longest))
    begin = base_lr * draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    return dict(base_lr=base_lr, warmup_steps=steps, warmup_begin_lr=begin,
                warmup_mode=draw(st.sampled_from(["linear", "constant"])))


_LR = st.sampled_from([0.0, 1.0, 0.1, 1e-9]) | st.floats(1e-6, 1.0)


@st.composite
def _configs(draw):
    cls = draw(st.sampled_from(sorted(_PORTS)))
    kw = draw(_warmup(draw(_LR)))
    if cls == "FactorScheduler":
        kw.update(step=draw(st.integers(1, 40)),
                  # (a factor within ~1e-6 of 1 needs more than 2**24 table entries)
                  factor=draw(st.sampled_from([0.0, 0.5, 1.0, 1]) | st.floats(0.3, 0.999)),
                  stop_factor_lr=draw(st.sampled_from([1e-8, 0.0, -1.0, 1e-3]) | _LR))
    elif cls == "MultiFactorScheduler":
        steps = draw(st.lists(st.integers(1, _HORIZON), min_size=1, max_size=6, unique=True))
        kw.update(step=sorted(steps), factor=draw(st.sampled_from([0.0, 1]) | st.floats(0, 1)))
    else:
        kw.update(max_update=draw(st.integers(kw["warmup_steps"] + 1, _HORIZON + 50)),
                  final_lr=draw(st.sampled_from([0.0, 1e-4]) | _LR))
        if cls == "PolyScheduler":
            kw.update(pwr=draw(st.sampled_from([0, 1, 2, 3, 0.9]) | st.floats(0.0, 4.0)))
    return cls, kw


_PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(_configs(), st.randoms(use_true_random=False))
def test_pure_calls_equal_mxnet_called_in_order(config, rnd):
    cls, kw = config
    port = _PORTS[cls](**kw)
    want = np.array([float(port(n)) for n in range(_HORIZON)])
    sched = getattr(lrs, cls)(**kw)
    order = list(range(_HORIZON))
    rnd.shuffle(order)
    got = np.empty(_HORIZON)
    for n in order:
        got[n] = sched(n)
    np.testing.assert_array_equal(got, want)
    # (The next test holds the array path to float32 of the Python-int path.)


@_PROPERTY
@given(_configs(),
       st.sampled_from([0, 1, 37, 2**31 - 2, 2**31 - 1, 2**31, 2**40]) | st.integers(0, 2**62),
       st.sampled_from([1.0, 0.0, 0.3]) | st.floats(0.0, 10.0))
def test_mxnet_schedule_offsets_without_overflow(config, begin, lr_mult):
    cls, kw = config
    sched = getattr(lrs, cls)(**kw)
    if cls == "FactorScheduler":
        sched = lrs.FactorScheduler(**dict(kw, step=kw["step"] * 2**28))  # a huge step too
    schedule = lrs.mxnet_schedule(sched, begin, lr_mult=lr_mult)
    top = 2**31 - 1
    counts = np.array([0, 1, 2, 5, 50, 399, top // 2, top - 1, top], np.int32)
    want = np.array([sched(begin + int(c) + 1) * lr_mult for c in counts])
    np.testing.assert_array_equal([schedule(int(c)) for c in counts], want)
    np.testing.assert_array_equal(np.asarray(schedule(jnp.asarray(counts))),
                                  [received_float(float(x)) for x in want])


# --------------------------------------------------------------------- behaviour

def test_base_lr_change_takes_effect_on_later_calls():
    sched = lrs.FactorScheduler(step=10, factor=0.5, base_lr=0.1, warmup_steps=5,
                                warmup_begin_lr=0.0)
    jitted = jax.jit(lambda n: sched(n))
    assert sched(11) == 0.05 and jitted(jnp.int32(11)) == np.float32(0.05)
    sched.base_lr = 0.3
    assert sched(11) == 0.15 and sched(21) == 0.075
    # A function jit has traced keeps the rates it was traced with (they are
    # constants in it); a new trace reads the new base_lr.
    assert jitted(jnp.int32(11)) == np.float32(0.05)
    assert jax.jit(lambda n: sched(n))(jnp.int32(11)) == np.float32(0.15)
    # As in MXNet, the warmup still ends at the base_lr given at construction.
    assert sched.warmup_final_lr == 0.1 and sched(4) == 0.1 * 4 / 5
    with pytest.raises(ValueError, match="base_lr"):
        sched.base_lr = -1.0
    # Poly and cosine decay from the construction-time base_lr, like MXNet's.
    for cls in (lrs.PolyScheduler, lrs.CosineScheduler):
        sched = cls(100, base_lr=0.1)
        before = [sched(n) for n in range(0, 120, 7)]
        sched.base_lr = 0.5
        assert [sched(n) for n in range(0, 120, 7)] == before
        port = (_MXPoly if cls is lrs.PolyScheduler else _MXCosine)(100, base_lr=0.1)
        port.base_lr = 0.5
        assert [port(n) for n in range(120)][::7] == before


def test_other_hyperparameters_are_read_only():
    sched = lrs.FactorScheduler(step=10, factor=0.5)
    for name in ("step", "factor", "stop_factor_lr", "warmup_steps", "warmup_begin_lr",
                 "warmup_final_lr", "warmup_mode"):
        with pytest.raises(AttributeError):
            setattr(sched, name, 1)
    multi = lrs.MultiFactorScheduler(step=[5, 10])
    multi.step.append(20)  # a copy: the schedule is unchanged
    assert multi.step == [5, 10]


def test_attributes_have_mxnet_names():
    poly = lrs.PolyScheduler(100, base_lr=0.2, pwr=3, final_lr=0.01, warmup_steps=10)
    assert (poly.power, poly.base_lr_orig, poly.max_update, poly.final_lr, poly.max_steps) == (
        3.0, 0.2, 100, 0.01, 90)
    cos = lrs.CosineScheduler(50, warmup_steps=5, warmup_begin_lr=0.001)
    assert (cos.max_steps, cos.warmup_begin_lr, cos.warmup_final_lr) == (45, 0.001, 0.01)
    assert "CosineScheduler(max_update=50" in repr(cos)
    assert "mxnet_schedule(" in repr(lrs.mxnet_schedule(cos, 3))


def test_get_warmup_lr():
    sched = lrs.MultiFactorScheduler([50], base_lr=0.2, warmup_steps=8, warmup_begin_lr=0.04)
    port = _MXMultiFactor([50], base_lr=0.2, warmup_steps=8, warmup_begin_lr=0.04)
    assert [sched.get_warmup_lr(n) for n in range(8)] == [port.get_warmup_lr(n) for n in range(8)]
    np.testing.assert_array_equal(
        sched.get_warmup_lr(jnp.arange(8)),
        np.array([port.get_warmup_lr(n) for n in range(8)], np.float32))
    with pytest.raises(ValueError, match="warmup_steps"):
        sched.get_warmup_lr(8)
    with pytest.raises(ValueError, match="warmup_steps"):
        lrs.FactorScheduler(5).get_warmup_lr(jnp.arange(3))


@pytest.mark.parametrize("bad,error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                       ("3", TypeError), (None, TypeError),
                                       (jnp.float32(1.0), TypeError), (np.array([1.0]), TypeError)])
def test_bad_num_update(bad, error):
    with pytest.raises(error, match="num_update"):
        lrs.CosineScheduler(10)(bad)


def test_arrays_keep_their_shape_and_negative_counts_read_as_zero():
    sched = lrs.FactorScheduler(step=3, factor=0.5, base_lr=1.0, warmup_steps=2)
    n = np.array([[0, 1, 2, 3], [4, 100, -1, -5]], np.int32)
    got = sched(jnp.asarray(n))
    chex.assert_shape(got, (2, 4))
    np.testing.assert_array_equal(
        got, np.array([[sched(max(int(x), 0)) for x in row] for row in n], np.float32))
    assert sched(jnp.uint8(200)) == np.float32(sched(200))


def test_base_class_must_be_subclassed():
    base = lrs.LRScheduler(base_lr=0.1, warmup_steps=3)
    assert base.get_warmup_lr(1) == 0.1 / 3
    with pytest.raises(NotImplementedError):
        base(5)
    with pytest.raises(NotImplementedError):
        base(jnp.int32(5))


def test_mxnet_schedule_validation():
    sched = lrs.FactorScheduler(10)
    with pytest.raises(TypeError, match="scheduler"):
        lrs.mxnet_schedule(optax.constant_schedule(0.1))
    with pytest.raises(ValueError, match="begin_num_update"):
        lrs.mxnet_schedule(sched, -1)
    with pytest.raises(TypeError, match="begin_num_update"):
        lrs.mxnet_schedule(sched, 2.0)
    with pytest.raises(ValueError, match="lr_mult"):
        lrs.mxnet_schedule(sched, lr_mult=-0.5)
    with pytest.raises(ValueError, match="lr_mult"):
        lrs.mxnet_schedule(sched, lr_mult=float("inf"))
    with pytest.raises(TypeError, match="count"):
        lrs.mxnet_schedule(sched)(jnp.float32(3.0))


def test_lr_mult_is_applied_in_float64_before_the_cast():
    sched = lrs.CosineScheduler(1000, base_lr=0.1, warmup_steps=100)
    schedule = lrs.mxnet_schedule(sched, 7, lr_mult=0.3)
    want64 = np.array([sched(7 + c + 1) * 0.3 for c in range(1000)])
    got = np.asarray(jax.jit(schedule)(jnp.arange(1000)))
    np.testing.assert_array_equal(got, [received_float(float(x)) for x in want64])
    # Rounding twice (float32 rate, then float32 product) would differ somewhere.
    twice = np.array([np.float32(sched(7 + c + 1)) for c in range(1000)]) * np.float32(0.3)
    assert np.any(twice != got)


def test_is_an_optax_schedule():
    sched = lrs.MultiFactorScheduler([3, 6], factor=0.5, base_lr=0.25)
    tx = optax.scale_by_learning_rate(lrs.mxnet_schedule(sched, begin_num_update=1))
    params = jnp.zeros(2, jnp.float32)
    state = tx.init(params)
    step = jax.jit(lambda g, s: tx.update(g, s))
    got = []
    for _ in range(8):
        updates, state = step(jnp.ones(2, jnp.float32), state)
        got.append(float(-updates[0]))
    # Update k reads sched(1 + k): 0.25 up to update number 3, then 0.125, then 0.0625.
    assert got == [0.25, 0.25, 0.125, 0.125, 0.125, 0.0625, 0.0625, 0.0625]


def test_factor_sequence_is_repeated_multiplication():
    # 0.1 * 0.95 ** k rounds differently from multiplying by 0.95 k times.
    sched = lrs.FactorScheduler(step=1, factor=0.95, stop_factor_lr=0.0, base_lr=0.1)
    value, differs = 0.1, False
    for k in range(1, 300):
        value *= 0.95
        assert sched(k + 1) == value
        differs |= value != 0.1 * 0.95 ** k
    assert differs


def test_long_factor_sequences(monkeypatch):
    monkeypatch.setattr(lrs, "_MAX_TABLE", 64)
    sched = lrs.FactorScheduler(step=1, factor=0.999, stop_factor_lr=0.0, base_lr=1.0)
    port = _MXFactor(step=1, factor=0.999, stop_factor_lr=0.0, base_lr=1.0)
    want = [port(n) for n in range(3000)]
    # Python ints beyond the stored table keep multiplying.
    assert [sched(n) for n in (2999, 70, 2000, 65, 64)] == [want[n] for n in (2999, 70, 2000,
                                                                               65, 64)]
    # A traced call needs every distinct rate in a table: a clear error instead.
    with pytest.raises(ValueError, match="stop_factor_lr"):
        sched(jnp.int32(3))
    with pytest.raises(ValueError, match="max_update"):
        lrs.PolyScheduler(100)(jnp.int32(3))
    with pytest.raises(ValueError, match="warmup_steps"):
        lrs.MultiFactorScheduler([500], base_lr=0.1, warmup_steps=100)(jnp.int32(3))


def test_exported_from_mxopt():
    assert mxopt.lr_scheduler is lrs
    assert set(lrs.__all__) == {"LRScheduler", "FactorScheduler", "MultiFactorScheduler",
                                "PolyScheduler", "CosineScheduler", "mxnet_schedule",
                                "from_mxnet"}


@pytest.mark.parametrize("sched", [
    lrs.FactorScheduler(10, 0.5, base_lr=0.1, warmup_steps=3, warmup_begin_lr=0.01),
    lrs.MultiFactorScheduler([3, 7], 0.5, base_lr=0.1),
    lrs.PolyScheduler(50, base_lr=0.1, pwr=3, final_lr=0.001, warmup_steps=5),
    lrs.CosineScheduler(50, base_lr=0.1, final_lr=0.001)])
def test_pickles_by_constructor_arguments_checked_again_on_load(sched):
    import pickle

    sched.base_lr = 0.05  # MXNet's optimizer may have overwritten it
    sched(jnp.arange(20))  # fills the cached tables, which are not pickled
    data = pickle.dumps(sched)
    assert b"_memo" not in data
    back = pickle.loads(data)
    assert repr(back) == repr(sched)
    assert [back(n) for n in range(60)] == [sched(n) for n in range(60)]
    # A corrupted pickle fails as the constructor would, naming the argument.
    bad = data.replace(b"warmup_mode", b"warmup_moda")
    with pytest.raises(TypeError, match="warmup_moda"):
        pickle.loads(bad)


def test_rate_tables_parse_every_rate_as_one_at_a_time():
    # received_floats (the vectorised dmlc::stof the tables use) against
    # received_float, one Python number at a time: rates over every decade a
    # float32 holds and past it (MXNet refuses exponents beyond 38), scheduler
    # products, negative and signed zeros, integers, text with an exponent.
    rng = np.random.default_rng(0)
    values = np.concatenate([
        10.0 ** rng.uniform(-46, 4, 4000), -(10.0 ** rng.uniform(-46, 4, 500)),
        rng.uniform(0.0, 1.0, 2000), 0.05 * 0.9 ** np.arange(400.0), 0.3 * np.arange(50.0),
        [0.0, -0.0, 1.0, 5.0, 1e-5, 1e16, 123456.7, 12345678.9, 1e38, 3e38, 1e-38, 1e-39,
         2.5e-40, np.inf, -np.inf]]).reshape(-1, 7)
    got = received_floats(values)
    want = np.array([received_float(float(x)) for x in values.ravel()],
                    np.float32).reshape(values.shape)
    assert got.dtype == np.float32 and got.shape == values.shape
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
