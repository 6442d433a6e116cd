"""Adam, Adamax, Nadam, Ftrl and FTML against real MXNet 1.9.1 (issue 17).

The golden runs (tests/golden/family, tools/make_golden_family.py) drive each
MXNet optimizer through ``get_updater`` for 30 steps, ``updater(i, grad,
weight)`` for i = 0, 1, 2 in turn. Here:

* the functional form (``mxopt.adam``, ...) runs the same steps under
  ``jax.jit`` on the whole tree at once. Leaf names keep MXNet's names behind a
  prefix that sorts them in MXNet's index order (``a_conv0_weight``, ...), so
  Nadam's shared ``m_schedule`` advances in MXNet's call order and the
  ``_weight`` rule still applies. One compiled step serves every config of
  the same structure (the hyperparameters are traced);
* the class form (``mxopt.create(name, ...)`` + ``mxopt.get_updater``) replays
  MXNet's calls one index at a time.

Both are held to rtol 1e-5 / atol 1e-6 (float32) and one float16 ulp
(multi_precision); the class form is also checked to the bit (weights,
masters and state), which it is for all five.
"""
import dataclasses
import functools
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_reference_family import golden

import mxopt

OPTS = ("adam", "adamax", "nadam", "ftrl", "ftml")
MAKERS = {"adam": mxopt.adam, "adamax": mxopt.adamax, "nadam": mxopt.nadam,
          "ftrl": mxopt.ftrl, "ftml": mxopt.ftml}
OWN = {"adam": ("beta1", "beta2", "epsilon"), "adamax": ("beta1", "beta2"),
       "nadam": ("beta1", "beta2", "epsilon", "schedule_decay"), "ftrl": ("lamda1", "beta"),
       "ftml": ("beta1", "beta2", "epsilon")}
# MXNet's signature rates overwrite a scheduler's base_lr (Ftrl's never does;
# FTML has none); the warmup still ramps to the construction-time rate.
SIGNATURE_LR = {"adam": 0.001, "adamax": 0.002, "nadam": 0.001}
PREFIX = "abc"


def _configs(opt):
    _, meta = golden(opt)
    return [pytest.param(opt, c, id=f"{opt}-{cfg['name']}")
            for c, cfg in enumerate(meta["configs"]) if "raises" not in cfg]


ALL = [p for opt in OPTS for p in _configs(opt)]


def _leaf(meta, i):
    return f"{PREFIX[i]}_{meta['names'][i]}"


def _scheduler(opt, cfg, kwargs):
    sched = mxopt.lr_scheduler.FactorScheduler(**cfg["scheduler"])
    if opt in SIGNATURE_LR and "learning_rate" not in kwargs:
        sched.base_lr = SIGNATURE_LR[opt]
    return sched


@dataclasses.dataclass(frozen=True)
class _WdRule:
    """MXNet's ``param_idx2name`` rule (names not ending in ``_weight``/``_gamma``
    get 0), then the config's ``wd_mult`` by name; hashable, so it can be a
    static option of a shared compiled step."""
    overrides: tuple

    def __call__(self, name, leaf):
        return dict(self.overrides).get(name,
                                        mxopt.multipliers.mxnet_module_wd_mult(name, leaf))


def _options(opt, cfg, meta):
    """(traced hyperparameters, static options) of the functional form."""
    kw = cfg["kwargs"]
    names = {n: _leaf(meta, i) for i, n in enumerate(meta["names"])}
    traced = {k: float(kw[k]) for k in OWN[opt] + ("wd", "rescale_grad") if k in kw}
    static = dict(multi_precision=bool(kw.get("multi_precision", False)),
                  begin_num_update=kw.get("begin_num_update", 0))
    if cfg["scheduler"]:
        static["learning_rate"] = _scheduler(opt, cfg, kw)
    else:
        traced["learning_rate"] = float(kw["learning_rate"])
    if kw.get("clip_gradient") is not None:
        traced["clip_gradient"] = float(kw["clip_gradient"])
    if cfg["lr_mult"]:
        static["lr_mult"] = tuple(
            (_leaf(meta, k) if isinstance(k, int) else names[k], m) for k, m in cfg["lr_mult"])
    if cfg["idx2name"]:
        static["wd_mult"] = _WdRule(tuple((names[k], m) for k, m in cfg["wd_mult"]))
    return traced, static


def _build(opt, traced, static):
    static = dict(static)
    if "lr_mult" in static:
        static["lr_mult"] = dict(static["lr_mult"])
    return MAKERS[opt](**traced, **static)


@functools.lru_cache(maxsize=None)
def _compiled_step(opt, static_items):
    """One jitted step per optimizer and static structure, shared by configs."""
    static = dict(static_items)

    @jax.jit
    def step(params, state, grads, traced):
        updates, state = _build(opt, traced, static).update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _inputs(opt, c):
    data, meta = golden(opt)
    cfg = meta["configs"][c]
    dtype = cfg["dtype"]
    n = len(meta["shapes"])
    w0 = [data[f"{dtype}_p{i}_w0"] for i in range(n)]
    grads = [data[f"{dtype}_p{i}_grads"] for i in range(n)]
    return data, meta, cfg, w0, grads


def run_functional(opt, c):
    """Weights (and masters) after each step: {(i, name): (steps, *shape)}."""
    data, meta, cfg, w0, grads = _inputs(opt, c)
    traced, static = _options(opt, cfg, meta)
    step = _compiled_step(opt, tuple(sorted(static.items(), key=lambda kv: kv[0])))
    params = {_leaf(meta, i): jnp.asarray(w) for i, w in enumerate(w0)}
    state = _build(opt, traced, static).init(params)
    out = {}
    for k in range(meta["steps"]):
        g = {_leaf(meta, i): jnp.asarray(x[k]) for i, x in enumerate(grads)}
        params, state = step(params, state, g, traced)
        for i in range(len(w0)):
            out.setdefault((i, "weight"), []).append(np.asarray(params[_leaf(meta, i)]))
            if static["multi_precision"]:
                out.setdefault((i, "master"), []).append(
                    np.asarray(state.master[_leaf(meta, i)]))
    return {k: np.stack(v) for k, v in out.items()}


def _class_optimizer(opt, cfg, meta):
    kw = dict(cfg["kwargs"])
    if cfg["scheduler"]:
        kw["lr_scheduler"] = mxopt.lr_scheduler.FactorScheduler(**cfg["scheduler"])
    if cfg["idx2name"]:
        kw["param_idx2name"] = dict(enumerate(meta["names"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MXNet's base_lr overwrite notice
        o = mxopt.create(opt, **kw)
    if cfg["lr_mult"]:
        o.set_lr_mult({k: m for k, m in cfg["lr_mult"]})
    if cfg["wd_mult"]:
        o.set_wd_mult({k: m for k, m in cfg["wd_mult"]})
    return o


def run_class(opt, c):
    """The class form through get_updater, in the golden script's call order."""
    data, meta, cfg, w0, grads = _inputs(opt, c)
    updater = mxopt.get_updater(_class_optimizer(opt, cfg, meta))
    weights = [jnp.asarray(w) for w in w0]
    out = {}
    for k in range(meta["steps"]):
        for i in range(len(w0)):
            weights[i] = updater(i, jnp.asarray(grads[i][k]), weights[i])
        for i in range(len(w0)):
            out.setdefault((i, "weight"), []).append(np.asarray(weights[i]))
            state = updater.states[i]
            if cfg["dtype"] == "float16":
                out.setdefault((i, "master"), []).append(np.asarray(state[0]))
                state = state[1]
            for name, s in zip(cfg["state_names"], state):
                out.setdefault((i, name), []).append(np.asarray(s))
    return {k: np.stack(v) for k, v in out.items()}


def ulps(got, want):
    """Largest distance in ulps (of the dtype) between two arrays; NaNs must agree."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert (np.isnan(got) == np.isnan(want)).all()
    ok = ~np.isnan(want)
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[got.dtype.itemsize]

    def ordered(x):
        i = x.view(ints).astype(np.int64)
        return np.where(i < 0, np.iinfo(ints).min - i, i)

    d = np.abs(ordered(got[ok]) - ordered(want[ok]))
    return int(d.max()) if d.size else 0


def check(opt, c, results, *, exact):
    data, meta, cfg, _, _ = _inputs(opt, c)
    assert results, "nothing was compared"
    for (i, name), got in results.items():
        want = data[f"c{c}_p{i}_{name}"]
        where = f"{opt} {cfg['name']} p{i} {name}"
        if exact:
            assert ulps(got, want) == 0, where
        elif cfg["dtype"] == "float16" and name == "weight":
            assert ulps(got, want) <= 1, where
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=where)


def _refused(opt, cfg):
    # MXNet gives NaN weights for Adamax with clip_gradient=0: mxopt refuses it.
    return opt == "adamax" and cfg["kwargs"].get("clip_gradient") == 0.0


@pytest.mark.parametrize("opt, c", ALL)
def test_functional_form_under_jit_matches_mxnet(opt, c):
    cfg = golden(opt)[1]["configs"][c]
    if _refused(opt, cfg):
        with pytest.raises(ValueError, match="clip_gradient=0 makes every Adamax weight NaN"):
            run_functional(opt, c)
        return
    check(opt, c, run_functional(opt, c), exact=False)


@pytest.mark.parametrize("opt, c", ALL)
def test_class_form_matches_mxnet(opt, c):
    cfg = golden(opt)[1]["configs"][c]
    if _refused(opt, cfg):
        with pytest.raises(ValueError, match="clip_gradient=0 makes every Adamax weight NaN"):
            run_class(opt, c)
        return
    # Bit for bit: the host arithmetic is MXNet's, and Ftrl's and FTML's weight
    # is rebuilt from the new state as MXNet writes it.
    check(opt, c, run_class(opt, c), exact=True)


def test_nadam_per_step_schedule_is_the_textbook_product():
    # Each leaf sees mu_1 * ... * mu_t, whatever its position in the tree.
    params = {"a": jnp.zeros(2, jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    grads = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float32)}
    shared, textbook = mxopt.nadam(0.01), mxopt.nadam(0.01, per_step_schedule=True)
    s1, s2 = shared.init(params), textbook.init(params)
    mu = [0.9 * (1. - 0.5 * 0.96 ** (t * 0.004)) for t in (1, 2)]
    for _ in range(2):
        u1, s1 = shared.update(grads, s1, params)
        u2, s2 = jax.jit(textbook.update)(grads, s2, params)
    np.testing.assert_array_equal(u2["a"], u2["b"])
    assert not np.array_equal(u1["a"], u1["b"])  # MXNet's: b sees one more factor
    assert float(s2.m_schedule) == pytest.approx(mu[0] * mu[1], rel=1e-15)
    assert float(s1.m_schedule) == pytest.approx((mu[0] * mu[1]) ** 2, rel=1e-15)


def _distinct_kernels(tx, params):
    """The distinct fused computations of the compiled step (XLA:CPU compiles
    identical ones once), names and metadata aside."""
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    text = step.lower(params, tx.init(params), params).compile().as_text()
    bodies = set()
    for comp in re.split(r"\n(?=\S)", text):
        if comp.startswith("%fused"):
            comp = re.sub(r", metadata=\{[^}]*\}", "", comp)
            bodies.add(re.sub(r"(%|param_\d+\.|constant\.)[\w.\-]+", r"\1", comp))
    return len(bodies)


def test_nadam_shared_schedule_compiles_one_kernel_per_leaf_shape():
    # MXNet's m_schedule is a chain through the leaves. Each link is its own
    # small kernel (the same for every link) and each leaf's loop reads it as
    # a parameter, so leaves of one shape share their kernels, as with one
    # schedule per step. Fused into the loops, the chain made every leaf's
    # kernels distinct and the code quadratic in the leaf count (ResNet-50:
    # 254 distinct kernels, 3.5x the compile time; BENCHMARKS.md, issue 17).
    def tree(n):
        return {f"p{i:02d}": jnp.zeros(8, jnp.float32) for i in range(n)}
    few, many = (_distinct_kernels(mxopt.nadam(0.01), tree(n)) for n in (2, 12))
    assert many == few
    assert few <= _distinct_kernels(mxopt.nadam(0.01, per_step_schedule=True), tree(2)) + 1


def test_mxnet_nan_cases_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="clip_gradient=0 makes every Adamax weight NaN.*None"):
        mxopt.Adamax(clip_gradient=0)
    for make, name in ((mxopt.ftrl, "Ftrl"), (mxopt.ftml, "FTML")):
        with pytest.raises(ValueError, match=f"learning_rate must be > 0 for {name}"):
            make(0.0)
    with pytest.raises(ValueError, match="learning_rate must be > 0 for FTML"):
        mxopt.FTML(learning_rate=0.0)
    opt = mxopt.Ftrl(learning_rate=0.1)
    opt.set_lr_mult({0: 0.0})
    w = jnp.ones(3, jnp.float32)
    with pytest.raises(ValueError, match="index 0: the learning rate is 0"):
        opt.update(0, w, w, opt.create_state(0, w))
    assert opt.num_update == 0  # nothing was counted


def test_ftrl_refuses_float16_without_multi_precision_and_keeps_a_schedulers_base_lr():
    w16 = jnp.ones(3, jnp.float16)
    opt = mxopt.Ftrl()
    with pytest.raises(TypeError, match="index 0: Ftrl keeps its state in float32 only.*"
                                        "multi_precision=True"):
        opt.update(0, w16, w16, opt.create_state(0, w16))
    with pytest.raises(TypeError, match="'w' is float16.*multi_precision=True"):
        mxopt.ftrl(0.1).init({"w": w16})
    mp = mxopt.get_updater(mxopt.Ftrl(multi_precision=True))
    assert mp(0, w16, w16).dtype == jnp.float16
    sched = mxopt.lr_scheduler.FactorScheduler(step=10, base_lr=0.3)
    mxopt.Ftrl(learning_rate=0.1, lr_scheduler=sched)
    assert sched.base_lr == 0.3  # Ftrl never passes its rate to the base class
    with pytest.warns(UserWarning, match="overwritten"):
        mxopt.Adam(lr_scheduler=sched)  # Adam's signature rate does overwrite it
    assert sched.base_lr == 0.001


def test_pickled_updater_resumes_bit_for_bit():
    # get_states(dump_optimizer=True) keeps Nadam's m_schedule and the counts.
    data, meta, cfg, w0, grads = _inputs("nadam", 0)
    one = mxopt.get_updater(_class_optimizer("nadam", cfg, meta))
    ws = [jnp.asarray(w) for w in w0]
    for k in range(2):
        ws = [one(i, jnp.asarray(grads[i][k]), ws[i]) for i in range(3)]
    two = mxopt.get_updater(mxopt.Nadam())
    two.set_states(one.get_states(dump_optimizer=True))
    assert two.optimizer.m_schedule == one.optimizer.m_schedule
    a = [one(i, jnp.asarray(grads[i][2]), ws[i]) for i in range(3)]
    b = [two(i, jnp.asarray(grads[i][2]), ws[i]) for i in range(3)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


EAGER = [p for opt in ("adam", "adamax", "nadam") for p in _configs(opt)
         if golden(opt)[1]["configs"][p.values[1]]["dtype"] == "float32"
         and not _refused(opt, golden(opt)[1]["configs"][p.values[1]])]


@pytest.mark.parametrize("opt, c", EAGER)
def test_functional_form_outside_jit_is_mxnet_bit_for_bit(opt, c):
    # Outside jax.jit the count is concrete: schedules, bias corrections and
    # Nadam's schedule are MXNet's host float64, parsed as MXNet parses them.
    data, meta, cfg, w0, grads = _inputs(opt, c)
    traced, static = _options(opt, cfg, meta)
    tx = _build(opt, traced, static)  # Python numbers: nothing traced
    params = {_leaf(meta, i): jnp.asarray(w) for i, w in enumerate(w0)}
    state = tx.init(params)
    for k in range(4):
        g = {_leaf(meta, i): jnp.asarray(x[k]) for i, x in enumerate(grads)}
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        for i in range(len(w0)):
            want = data[f"c{c}_p{i}_weight"][k]
            assert ulps(np.asarray(params[_leaf(meta, i)]), want) == 0, (cfg["name"], k, i)
