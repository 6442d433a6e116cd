"""LARS and LAMB against real MXNet 1.9.1 (issue 18, item 1).

The golden runs (tests/golden/family/lars.npz, lamb.npz, written by
tools/make_golden_family2.py) drive MXNet's optimizers through
``get_updater`` for 30 steps over six named parameters, one list call
``updater([0, ..., 5], grads, weights)`` per step as Gluon's Trainer makes it
(one configuration per index instead). Here:

* the NumPy twins (:mod:`mxopt.reference`) under a small loop that plays
  MXNet's Python side are held to the bit;
* the functional form (``mxopt.lars``, ``mxopt.lamb``) runs the same steps under
  ``jax.jit`` on the whole tree, one compiled step per structure, the
  hyperparameters traced;
* the class form (``mxopt.create`` + ``mxopt.get_updater``) replays MXNet's calls
  (LAMB's ``"direct"`` configurations call ``update_multi_precision(i, ...)``
  itself, without an Updater: MXNet's ``lamb_update_phase1/2``).

The functional and class forms are held to rtol 1e-5 / atol 1e-6 (float32) and
one float16 ulp (multi_precision): their norms are ``jnp.sum``'s, not MXNet's
sequential float32 sums.
"""
import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_family_adam import ulps
from test_reference_family import FactorScheduler, golden

import mxopt
from mxopt import reference as R

OPTS = ("lars", "lamb")
PREFIX = "abcdef"
NO_TRUST = ("gamma", "beta", "bias")


def _configs(opt):
    _, meta = golden(opt)
    return [pytest.param(opt, c, id=f"{opt}-{cfg['name']}")
            for c, cfg in enumerate(meta["configs"])]


ALL = [p for opt in OPTS for p in _configs(opt)]


def _inputs(opt, c):
    data, meta = golden(opt)
    cfg = meta["configs"][c]
    dtype = cfg["dtype"]
    n = len(meta["shapes"])
    w0 = [data[f"{dtype}_p{i}_w0"] for i in range(n)]
    grads = [data[f"{dtype}_p{i}_grads"] for i in range(n)]
    return data, meta, cfg, w0, grads


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


# ----------------------------------------------------------------------------------
# The NumPy twins, bit for bit
# ----------------------------------------------------------------------------------

class PythonSide:
    """What MXNet's LARS and LAMB do in Python around their operators, for one
    ``update_multi_precision(indices, weights, grads, states)`` call."""

    def __init__(self, opt, cfg, names):
        kw = cfg["kwargs"]
        self.opt, self.kw = opt, kw
        # LAMB.update_multi_precision(i, ...) itself: lamb_update_phase1/2.
        self.direct = cfg["call"] == "direct"
        self.wd = kw.get("wd", 0.0)
        self.begin = kw.get("begin_num_update", 0)
        self.num_update = self.begin
        self.counts = {}
        self.scheduler = FactorScheduler(**cfg["scheduler"]) if cfg["scheduler"] else None
        # LAMB passes its signature rate up (overwriting base_lr); LARS passes none.
        passed = kw.get("learning_rate", 0.001 if opt == "lamb" else None)
        self.lr = 0.01 if (self.scheduler is None and passed is None) else passed
        if self.scheduler is not None and passed is not None \
                and self.scheduler.base_lr != passed:
            self.scheduler.base_lr = passed
        self.idx2name = dict(enumerate(names)) if cfg["idx2name"] else {}
        self.lr_mult = dict(cfg["lr_mult"])
        suffixes = ("_weight",) if opt == "lars" else ("_weight", "_gamma")
        self.wd_mult = {n: 0.0 for n in self.idx2name.values() if not n.endswith(suffixes)}
        self.wd_mult.update(dict(cfg["wd_mult"]))
        self.cur_lr = self.last_lr = None

    def _mult(self, value, index, mults):
        if index in mults:
            return value * mults[index]
        if index in self.idx2name:
            return value * mults.get(self.idx2name[index], 1.0)
        return value

    def _base_lr(self):
        return self.scheduler(self.num_update) if self.scheduler is not None else self.lr

    def call(self, indices, weights, grads, states):
        for i in indices:
            self.counts[i] = self.counts.get(i, self.begin) + 1
            self.num_update = max(self.num_update, self.counts[i])
        lr = self._base_lr()
        if self.opt == "lars":  # LARS._get_lrs shifts cur_lr/last_lr on every call
            if self.cur_lr is not None:
                self.last_lr = self.cur_lr
            if self.cur_lr is None:
                self.last_lr = lr
            self.cur_lr = lr
        out = []
        for i, w, g, s in zip(indices, weights, grads, states):
            args = (self._mult(lr, i, self.lr_mult), self._mult(self.wd, i, self.wd_mult))
            out.append(getattr(self, self.opt)(i, w, g, s, *args))
        return out

    def lars(self, i, w, g, state, lr, wd):
        kw = self.kw
        momentum = kw.get("momentum", 0.0)
        if momentum > 0 and kw.get("momentum_correction", True) and self.last_lr != 0:
            momentum = momentum * (self.cur_lr / self.last_lr)
        name = self.idx2name.get(i, str(i))
        if not name.endswith(NO_TRUST):
            lr = R.multi_lars(lr, R.multi_sum_sq(w), R.multi_sum_sq(g), wd,
                              eta=kw.get("eta", 0.001), eps=kw.get("eps", 0),
                              rescale_grad=kw.get("rescale_grad", 1.0))
        common = dict(lr=lr, wd=wd, rescale_grad=kw.get("rescale_grad", 1.0),
                      clip_gradient=kw.get("clip_gradient"))
        mp = w.dtype == np.float16
        mom, master = state if mp else (state, None)
        x, g = (master, g.astype(np.float32)) if mp else (w, g)
        if mom is not None:
            x, mom = R.preloaded_multi_sgd_mom_update(x, g, mom, momentum=momentum, **common)
        else:
            (x,) = R.preloaded_multi_sgd_update(x, g, **common)
        return (x.astype(np.float16), (mom, x)) if mp else (x, mom)

    def lamb(self, i, w, g, state, lr, wd):
        kw = self.kw
        if self.direct:
            return self.lamb_phases(i, w, g, state, lr, wd)
        own = {k: kw[k] for k in ("beta1", "beta2", "epsilon", "lower_bound", "upper_bound",
                                  "bias_correction", "rescale_grad", "clip_gradient")
               if k in kw}
        if w.dtype == np.float16:
            master, (mean, var) = state
            w, mean, var, master = R.multi_lamb_update(w, g, mean, var, lr=lr, t=self.counts[i],
                                                       wd=wd, weight32=master, **own)
            return w, (master, (mean, var))
        w, mean, var = R.multi_lamb_update(w, g, *state, lr=lr, t=self.counts[i], wd=wd, **own)
        return w, (mean, var)


    def lamb_phases(self, i, w, g, state, lr, wd):
        kw = self.kw
        own = {k: kw[k] for k in ("beta1", "beta2", "epsilon", "bias_correction",
                                  "rescale_grad", "clip_gradient") if k in kw}
        bounds = {k: kw[k] for k in ("lower_bound", "upper_bound") if k in kw}
        master, (mean, var) = state if w.dtype == np.float16 else (None, state)
        u, mean, var = R.lamb_update_phase1(w, g, mean, var, t=self.counts[i], wd=wd,
                                            weight32=master, **own)
        r1 = R.nrm2(w if master is None else master)
        w = R.lamb_update_phase2(w, u, r1, R.nrm2(u), lr=lr, weight32=master, **bounds)
        return (w, (mean, var)) if master is None else (w, (master, (mean, var)))


def _fresh_state(opt, cfg, w):
    z = np.zeros(w.shape, np.float32 if w.dtype == np.float16 else w.dtype)
    inner = (z, z) if opt == "lamb" else (z if cfg["kwargs"].get("momentum", 0.0) > 0 else None)
    if w.dtype != np.float16:
        return inner
    master = w.astype(np.float32)
    return (inner, master) if opt == "lars" else (master, inner)


def _state_arrays(opt, cfg, state, mp):
    if mp:
        inner, master = state if opt == "lars" else state[::-1]
    else:
        inner, master = state, None
    inner = () if inner is None else inner if isinstance(inner, tuple) else (inner,)
    named = list(zip(cfg["state_names"], inner))
    return named + ([("master", master)] if master is not None else [])


def run_twin(opt, c):
    data, meta, cfg, w0, grads = _inputs(opt, c)
    side = PythonSide(opt, cfg, meta["names"])
    weights = list(w0)
    states = [_fresh_state(opt, cfg, w) for w in w0]
    indices = list(range(len(w0)))
    chunk = 4 if opt == "lars" else 45  # MXNet's aggregate_num
    out = {}
    for k in range(meta["steps"]):
        g = [x[k] for x in grads]
        calls = ([indices[s:s + chunk] for s in range(0, len(indices), chunk)]
                 if cfg["call"] == "list" else [[i] for i in indices])
        for call in calls:
            results = side.call(call, [weights[i] for i in call], [g[i] for i in call],
                                [states[i] for i in call])
            for i, (w, s) in zip(call, results):
                weights[i], states[i] = w, s
        for i in indices:
            out.setdefault((i, "weight"), []).append(weights[i])
            for name, x in _state_arrays(opt, cfg, states[i], cfg["dtype"] == "float16"):
                out.setdefault((i, name), []).append(x)
    return {key: np.stack(v) for key, v in out.items()}


@pytest.mark.parametrize("opt, c", ALL)
def test_numpy_twins_are_mxnet_bit_for_bit(opt, c):
    check(opt, c, run_twin(opt, c), exact=True)


# ----------------------------------------------------------------------------------
# The functional form, under jax.jit
# ----------------------------------------------------------------------------------

MAKERS = {"lars": mxopt.lars, "lamb": mxopt.lamb}
OWN = {"lars": ("momentum", "eta", "eps", "rescale_grad", "wd"),
       "lamb": ("beta1", "beta2", "epsilon", "lower_bound", "upper_bound", "rescale_grad",
                "wd")}
STATIC_OWN = ("momentum_correction", "bias_correction", "lazy_update")


def _leaf(meta, cfg, i):
    # Without param_idx2name MXNet names parameter i "i" (LARS's name rule then
    # keeps nothing at the plain rate); with it, the names behind a prefix that
    # sorts them in index order (the Trainer's order, the tree's flatten order).
    return f"{PREFIX[i]}_{meta['names'][i]}" if cfg["idx2name"] else str(i)


@dataclasses.dataclass(frozen=True)
class _WdRule:
    """MXNet's ``param_idx2name`` rule for ``wd_mult`` (LARS: 0 unless the name
    ends in ``_weight``; the others: ``_weight`` or ``_gamma``), then the
    config's overrides by name; hashable, for a shared compiled step."""
    suffixes: tuple
    overrides: tuple

    def __call__(self, name, leaf):
        return dict(self.overrides).get(name, float(name.endswith(self.suffixes)))


def _options(opt, cfg, meta):
    """(traced hyperparameters, static options) of the functional form."""
    kw = cfg["kwargs"]
    names = {n: _leaf(meta, cfg, i) for i, n in enumerate(meta["names"])}
    traced = {k: float(kw[k]) for k in OWN[opt] if k in kw}
    static = dict(multi_precision=bool(kw.get("multi_precision", False)),
                  begin_num_update=kw.get("begin_num_update", 0),
                  **{k: kw[k] for k in STATIC_OWN if k in kw})
    if opt == "lars":
        # The momentum decides the state's structure: static.
        static["momentum"] = traced.pop("momentum", 0.0)
    if cfg["scheduler"]:
        sched = mxopt.lr_scheduler.FactorScheduler(**cfg["scheduler"])
        # A rate given to MXNet's constructor overwrites base_lr (LAMB always
        # gives its signature's); the functional form takes the scheduler as is.
        passed = kw.get("learning_rate", 0.001 if opt == "lamb" else None)
        if passed is not None:
            sched.base_lr = passed
        static["learning_rate"] = sched
    else:
        traced["learning_rate"] = float(kw.get("learning_rate", 0.01))
    if kw.get("clip_gradient") is not None:
        traced["clip_gradient"] = float(kw["clip_gradient"])
    if cfg["lr_mult"]:
        static["lr_mult"] = tuple(
            (_leaf(meta, cfg, k) if isinstance(k, int) else names[k], m)
            for k, m in cfg["lr_mult"])
    if cfg["idx2name"]:
        suffixes = ("_weight",) if opt == "lars" else ("_weight", "_gamma")
        static["wd_mult"] = _WdRule(suffixes, tuple((names[k], m) for k, m in cfg["wd_mult"]))
    return traced, static


def _build(opt, traced, static):
    static = dict(static)
    if "lr_mult" in static:
        static["lr_mult"] = dict(static["lr_mult"])
    return MAKERS[opt](**traced, **static)


@functools.lru_cache(maxsize=None)
def _compiled_step(opt, static_items):
    static = dict(static_items)

    @jax.jit
    def step(params, state, grads, traced):
        updates, state = _build(opt, traced, static).update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def run_functional(opt, c, *, jit=True, steps=None):
    data, meta, cfg, w0, grads = _inputs(opt, c)
    traced, static = _options(opt, cfg, meta)
    if jit:
        step = _compiled_step(opt, tuple(sorted(static.items(), key=lambda kv: kv[0])))
    else:
        tx = _build(opt, traced, static)

        def step(params, state, grads, _):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state
    names = [_leaf(meta, cfg, i) for i in range(len(w0))]
    params = {n: jnp.asarray(w) for n, w in zip(names, w0)}
    state = _build(opt, traced, static).init(params)
    out = {}
    for k in range(steps or meta["steps"]):
        g = {n: jnp.asarray(x[k]) for n, x in zip(names, grads)}
        params, state = step(params, state, g, traced)
        for i, n in enumerate(names):
            out.setdefault((i, "weight"), []).append(np.asarray(params[n]))
            if static["multi_precision"]:
                out.setdefault((i, "master"), []).append(np.asarray(state.master[n]))
    return {k: np.stack(v) for k, v in out.items()}


LIST_CALLS = [p for p in ALL if golden(p.values[0])[1]["configs"][p.values[1]]["call"] == "list"]


@pytest.mark.parametrize("opt, c", LIST_CALLS)
def test_functional_form_under_jit_matches_mxnets_list_calls(opt, c):
    check(opt, c, run_functional(opt, c), exact=False)


# ----------------------------------------------------------------------------------
# The class form, replaying MXNet's calls
# ----------------------------------------------------------------------------------

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
        o.set_lr_mult(dict(cfg["lr_mult"]))
    if cfg["wd_mult"]:
        o.set_wd_mult(dict(cfg["wd_mult"]))
    return o


def run_class(opt, c, steps=None):
    data, meta, cfg, w0, grads = _inputs(opt, c)
    updater = mxopt.get_updater(_class_optimizer(opt, cfg, meta))
    weights = [jnp.asarray(w) for w in w0]
    indices = list(range(len(w0)))
    out = {}
    for k in range(steps or meta["steps"]):
        g = [jnp.asarray(x[k]) for x in grads]
        if cfg["call"] == "list":
            weights = updater(indices, g, weights)
        elif cfg["call"] == "index":
            weights = [updater(i, g[i], weights[i]) for i in indices]
        else:  # "direct": the optimizer itself, one index per call
            o = updater.optimizer
            for i in indices:
                if i not in updater.states:
                    updater.states[i] = o.create_state_multi_precision(i, weights[i])
                weights[i], updater.states[i] = o.update_multi_precision(
                    i, weights[i], g[i], updater.states[i])
        for i in indices:
            out.setdefault((i, "weight"), []).append(np.asarray(weights[i]))
            state = jax.tree.map(np.asarray, updater.states[i])
            for name, x in _state_arrays(opt, cfg, state, cfg["dtype"] == "float16"):
                out.setdefault((i, name), []).append(x)
    return {key: np.stack(v) for key, v in out.items()}


@pytest.mark.parametrize("opt, c", ALL)
def test_class_form_matches_mxnets_calls(opt, c):
    check(opt, c, run_class(opt, c), exact=False)


def test_a_list_call_corrects_the_momentum_of_its_first_chunk_only():
    # The functional form is one list call per step: after each rate change the
    # momentum correction reaches the first four parameters. MXNet called one
    # index at a time in this run, which corrects only parameter 0: parameters
    # 1-3 then differ widely, 0 and the second chunk (4, 5) agree.
    c = next(k for k, cfg in enumerate(golden("lars")[1]["configs"])
             if cfg["name"] == "warmup_factor_per_index")
    data = golden("lars")[0]
    got = run_functional("lars", c)
    for i in range(6):
        want = data[f"c{c}_p{i}_weight"]
        close = np.allclose(got[(i, "weight")], want, rtol=1e-5, atol=1e-6)
        assert close == (i in (0, 4, 5)), i


def test_norms_of_float16_params_are_taken_from_the_stored_weight():
    # Under multi_precision the kernel sees the float32 master, but MXNet's norm
    # is a float16 one (each product rounded to float16). A weight whose squares
    # round in float16 tells the two apart.
    w = jnp.full((64,), 0.3333, jnp.float16)
    g = jnp.full((64,), 0.01, jnp.float16)
    tx = mxopt.lamb(0.1, multi_precision=True)
    state = tx.init({"w": w})
    _, state = jax.jit(tx.update)({"w": g}, state, {"w": w})
    zeros = np.zeros(64, np.float32)
    want = R.multi_lamb_update(np.asarray(w), np.asarray(g), zeros, zeros, lr=0.1, t=1,
                               weight32=np.asarray(w, np.float32))[3]
    # The same step with the norm of the float32 master: hundreds of ulps away.
    master_norm = R.multi_lamb_update(np.asarray(w, np.float32), np.asarray(g, np.float32),
                                      zeros, zeros, lr=0.1, t=1)[0]
    assert ulps(np.asarray(state.master["w"]), want) <= 2
    assert ulps(master_norm, want) > 50


# ----------------------------------------------------------------------------------
# Rules, errors and pickles
# ----------------------------------------------------------------------------------

def test_bad_hyperparameters_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="lower_bound"):
        mxopt.lamb(lower_bound=-1.0)  # MXNet silently ignores a negative bound
    with pytest.raises(ValueError, match="upper_bound"):
        mxopt.LAMB(upper_bound=-2.0)
    with pytest.raises(ValueError, match="eta"):
        mxopt.lars(eta=-0.1)
    with pytest.raises(TypeError, match="momentum_correction"):
        mxopt.LARS(momentum_correction=1)
    with pytest.raises(ValueError, match="momentum"):
        mxopt.lars(momentum=1.0)


def test_lars_wd_mult_rule_zeroes_gamma_too():
    names = dict(enumerate(["fc_weight", "bn_gamma", "fc_bias"]))
    lars = mxopt.LARS(param_idx2name=names, wd=0.1)
    assert lars.wd_mult == {"bn_gamma": 0.0, "fc_bias": 0.0}
    lars.set_wd_mult({"bn_gamma": 0.5})
    assert lars._get_wds([0, 1, 2]) == [0.1, 0.05, 0.0]
    assert mxopt.LAMB(param_idx2name=names).wd_mult == {"fc_bias": 0.0}  # the base rule


def test_pickled_lars_updater_resumes_bit_for_bit():
    # get_states(dump_optimizer=True) keeps the counts and cur_lr/last_lr, which
    # the momentum correction reads.
    c = next(k for k, cfg in enumerate(golden("lars")[1]["configs"])
             if cfg["name"] == "warmup_factor")
    data, meta, cfg, w0, grads = _inputs("lars", c)
    one = mxopt.get_updater(_class_optimizer("lars", cfg, meta))
    ws = [jnp.asarray(w) for w in w0]
    idx = list(range(len(w0)))
    for k in range(3):
        ws = one(idx, [jnp.asarray(g[k]) for g in grads], ws)
    two = mxopt.get_updater(mxopt.LARS())
    two.set_states(one.get_states(dump_optimizer=True))
    assert (two.optimizer.cur_lr, two.optimizer.last_lr) == (one.optimizer.cur_lr,
                                                              one.optimizer.last_lr)
    a = one(idx, [jnp.asarray(g[3]) for g in grads], ws)
    b = two(idx, [jnp.asarray(g[3]) for g in grads], ws)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------------
# The compiled step on XLA:CPU
# ----------------------------------------------------------------------------------

@pytest.mark.skipif(jax.default_backend() != "cpu", reason="what XLA:CPU makes of the step")
def test_lars_step_reads_the_data_twice_and_allocates_no_parameter_sized_temporary():
    # SGD's momentum step (w, g, mom read; mom and w written: 7 passes) plus one
    # reduction pass over w and one over g for the norms.
    rng = np.random.RandomState(0)
    shapes = {"conv": (64, 64, 3, 3), "fc": (512, 1000), "fc_bias": (1000,)}
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    grads = jax.tree.map(lambda x: x * 0.5, params)
    tx = mxopt.lars(mxopt.lr_scheduler.CosineScheduler(max_update=100, base_lr=0.1),
                    momentum=0.9, eta=0.01, wd=1e-4, rescale_grad=0.5, clip_gradient=1.0,
                    lr_mult={"*bias": 2.0})

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        params, tx.init(params), grads).compile()
    nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
    assert compiled.memory_analysis().temp_size_in_bytes <= 0.01 * nbytes
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    assert cost["bytes accessed"] / nbytes <= 9 + 0.01


def test_mixed_dtypes_chunk_as_mxnets_updater_groups_them():
    # MXNet's Updater groups a list call by weight dtype (in order of first
    # appearance) before cutting chunks of four: with a float16 leaf second,
    # the first chunk is the first four float32 leaves. The functional form
    # and the class form's Updater must agree on it.
    rng = np.random.RandomState(3)
    dtypes = [np.float32, np.float16, np.float32, np.float32, np.float32, np.float32]
    names = [f"{c}_weight" for c in "abcdef"]
    w0 = [rng.normal(size=(5,)).astype(d) for d in dtypes]
    grads = [[rng.normal(size=(5,)).astype(d) for d in dtypes] for _ in range(4)]
    sched = dict(step=1, factor=0.5, base_lr=0.5)
    tx = mxopt.lars(mxopt.lr_scheduler.FactorScheduler(**sched), momentum=0.9, eta=0.1,
                    multi_precision=True)
    params = dict(zip(names, map(jnp.asarray, w0)))
    state = tx.init(params)
    updater = mxopt.get_updater(mxopt.LARS(momentum=0.9, eta=0.1, multi_precision=True,
                                           lr_scheduler=mxopt.lr_scheduler.FactorScheduler(
                                               **sched)))
    weights = list(map(jnp.asarray, w0))
    for g in grads:
        updates, state = tx.update(dict(zip(names, map(jnp.asarray, g))), state, params)
        params = optax.apply_updates(params, updates)
        weights = updater(list(range(6)), list(map(jnp.asarray, g)), weights)
    for n, w in zip(names, weights):
        np.testing.assert_allclose(np.asarray(params[n], np.float32), np.asarray(w, np.float32),
                                   rtol=1e-3, atol=1e-3, err_msg=n)
    # ...and correcting another chunk would show: the correction matters here.
    other = mxopt.get_updater(mxopt.LARS(momentum=0.9, eta=0.1, multi_precision=True,
                                         lr_scheduler=mxopt.lr_scheduler.FactorScheduler(
                                             **sched)))
    single = list(map(jnp.asarray, w0))
    for g in grads:
        single = [other(i, jnp.asarray(g[i]), single[i]) for i in range(6)]
    assert not all(np.allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=1e-3, atol=1e-3) for a, b in zip(single, weights))


def test_states_export_to_mxnets_layout_and_resume():
    # The interop table's entries: LAMB's (mean, var) and, under
    # multi_precision, LARS's (mom, master) (MXNet's fused layout), with its
    # last_lr as MXNet's cur_lr (None before the first step).
    from mxopt import interop as I
    params = {"b": jnp.zeros(2, jnp.float32), "w": jnp.ones((2, 3), jnp.float32)}
    index_map = {0: "b", 1: "w"}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    tx = mxopt.lamb(0.01, lower_bound=0.5)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params1 = optax.apply_updates(params, updates)
    record = I.optimizer_record("LAMB", learning_rate=0.01, lower_bound=0.5)
    exported = I.state_to_mxnet(state, params1, index_map, record)
    back = I.resume(I.loads_states(I.dumps_states(exported)), params1, index_map)
    jax.tree.map(np.testing.assert_array_equal, back.state, state)
    assert back.alias == "lamb" and back.kwargs["lower_bound"] == 0.5
    half = {"w": jnp.ones((2, 3), jnp.float16)}
    tx = mxopt.lars(0.1, momentum=0.9, multi_precision=True)
    state = tx.init(half)
    _, state = tx.update({"w": jnp.full((2, 3), 0.5, jnp.float16)}, state, half)
    exported = I.state_to_mxnet(state, half, {0: "w"},
                                I.optimizer_record("LARS", momentum=0.9, multi_precision=True))
    mom, master = exported.states[0]
    np.testing.assert_array_equal(master, state.master["w"])
    np.testing.assert_array_equal(mom, state.inner_state.mom["w"])
    assert exported.optimizer["cur_lr"] == pytest.approx(0.1)
    back = I.resume(I.loads_states(I.dumps_states(exported)), half, {0: "w"})
    np.testing.assert_array_equal(back.state.inner_state.mom["w"], state.inner_state.mom["w"])
    assert float(back.state.inner_state.last_lr) == float(state.inner_state.last_lr)
    fresh = I.state_to_mxnet(tx.init(half), half, {0: "w"},
                             I.optimizer_record("LARS", momentum=0.9, multi_precision=True))
    assert fresh.optimizer["cur_lr"] is None
    again = I.resume(I.loads_states(I.dumps_states(fresh)), half, {0: "w"})
    assert np.isnan(float(again.state.inner_state.last_lr))


def test_lars_keep_rate_names_follows_what_mxnet_knew_of_the_names():
    # MXNet keeps the plain rate of names ending in gamma/beta/bias only when it
    # knows the names; under a Gluon Trainer (no names) every parameter takes
    # the trust ratio: keep_rate_names=().
    params = {"fc_weight": jnp.array([3.0, 4.0]), "fc_bias": jnp.array([1.0, 2.0])}
    grads = {"fc_weight": jnp.array([0.6, 0.8]), "fc_bias": jnp.array([0.5, 0.5])}

    def step(**kwargs):
        tx = mxopt.lars(0.1, momentum=0.9, eta=0.1, **kwargs)
        return tx.update(grads, tx.init(params), params)[0]

    mxnets, gluons = step(), step(keep_rate_names=())
    np.testing.assert_array_equal(mxnets["fc_weight"], gluons["fc_weight"])
    np.testing.assert_allclose(mxnets["fc_bias"], [-0.05, -0.05], rtol=1e-6)  # plain rate
    ratio = 0.1 * np.sqrt(5.0) / np.sqrt(0.5)  # eta * |w| / |g|
    np.testing.assert_allclose(gluons["fc_bias"], -0.1 * ratio * 0.5, rtol=1e-5)
    np.testing.assert_array_equal(step(keep_rate_names=("weight",))["fc_bias"],
                                  gluons["fc_bias"])
    for bad in ("bias", (1,), ("",)):
        with pytest.raises(TypeError, match="keep_rate_names must be a sequence"):
            mxopt.lars(0.1, keep_rate_names=bad)
