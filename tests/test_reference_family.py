"""The NumPy twins of issue 17's ten optimizers reproduce MXNet 1.9.1 bit for bit.

The golden files (tests/golden/family, written by tools/make_golden_family.py) hold
real MXNet runs through ``mx.optimizer.get_updater``. Here a small loop plays
MXNet's Python side (per-index counts from ``begin_num_update``, the scheduler read
after counting, ``lr_mult``/``wd_mult`` lookup, Nadam's optimizer-wide
``m_schedule``, the float32 master copy under ``multi_precision``) and calls the
twins in ``mxopt.reference`` for the arithmetic.
"""
import json
import os

import numpy as np
import pytest

from mxopt import reference as R

FAMILY = os.path.join(os.path.dirname(__file__), "golden", "family")
OPTIMIZERS = ("sgd", "nag", "signum", "adam", "adagrad", "adadelta", "adamax", "nadam",
              "ftrl", "ftml")

# MXNet 1.9.1's constructor defaults (the golden metadata lists only what was passed).
DEFAULTS = {
    "sgd": dict(momentum=0.0),
    "nag": dict(momentum=0.0),
    "signum": dict(momentum=0.9, wd_lh=0.0),
    "adam": dict(beta1=0.9, beta2=0.999, epsilon=1e-8),
    "adagrad": dict(eps=1e-7),
    "adadelta": dict(rho=0.90, epsilon=1e-5),
    "adamax": dict(beta1=0.9, beta2=0.999),
    "nadam": dict(beta1=0.9, beta2=0.999, epsilon=1e-8, schedule_decay=0.004),
    "ftrl": dict(lamda1=0.01, beta=1),
    "ftml": dict(beta1=0.6, beta2=0.999, epsilon=1e-8),
}
# Subclasses whose signature has a numeric default rate pass it to the base class,
# so it overwrites a scheduler's base_lr even when the caller passed none.
SIGNATURE_LR = {"adam": 0.001, "adamax": 0.002, "nadam": 0.001, "signum": 0.01}


# A held-out run (tools/make_golden_family.py --heldout SEED --out DIR) replaces
# the committed trajectories with DIR's.
HELDOUT = os.environ.get("MXOPT_FAMILY_GOLDEN")


def _load(opt):
    root = os.path.join(HELDOUT, "family") if HELDOUT else FAMILY
    data = np.load(os.path.join(root, f"{opt}.npz"))
    return data, json.loads(str(data["meta"]))


_CACHE = {}


def golden(opt):
    if opt not in _CACHE:
        _CACHE[opt] = _load(opt)
    return _CACHE[opt]


def all_configs(raising=False):
    """The golden configurations MXNet ran (or, with ``raising``, refused)."""
    for opt in OPTIMIZERS:
        _, meta = golden(opt)
        for c, cfg in enumerate(meta["configs"]):
            if ("raises" in cfg) == raising:
                yield pytest.param(opt, c, id=f"{opt}-{c}-{cfg['name']}")


class FactorScheduler:
    """mx.lr_scheduler.FactorScheduler's arithmetic (stateful, as in MXNet)."""

    def __init__(self, step, factor=1, stop_factor_lr=1e-8, base_lr=0.01, warmup_steps=0,
                 warmup_begin_lr=0, warmup_mode="linear"):
        assert warmup_mode == "linear"
        self.step, self.factor, self.stop_factor_lr = step, factor, stop_factor_lr
        self.base_lr = self.warmup_final_lr = base_lr
        self.warmup_steps, self.warmup_begin_lr = warmup_steps, warmup_begin_lr
        self.count = 0

    def __call__(self, num_update):
        if num_update < self.warmup_steps:
            ramp = self.warmup_final_lr - self.warmup_begin_lr
            return self.warmup_begin_lr + ramp * float(num_update) / float(self.warmup_steps)
        while num_update > self.count + self.step:
            self.count += self.step
            self.base_lr *= self.factor
            if self.base_lr < self.stop_factor_lr:
                self.base_lr = self.stop_factor_lr
        return self.base_lr


class PythonSide:
    """What mx.optimizer.Optimizer does around the arithmetic of one update call."""

    def __init__(self, opt, cfg, names):
        kw = cfg["kwargs"]
        self.opt = opt
        self.hyper = dict(DEFAULTS[opt], **{k: v for k, v in kw.items() if k in DEFAULTS[opt]})
        self.wd = kw.get("wd", 0.0)
        self.rescale_grad = kw.get("rescale_grad", 1.0)
        self.clip_gradient = kw.get("clip_gradient")
        self.begin = kw.get("begin_num_update", 0)
        self.num_update = self.begin
        self.counts = {}
        self.scheduler = FactorScheduler(**cfg["scheduler"]) if cfg["scheduler"] else None
        passed = None if opt == "ftrl" else kw.get("learning_rate", SIGNATURE_LR.get(opt))
        self.lr = 0.01 if (self.scheduler is None and passed is None) else passed
        if self.scheduler is not None and passed is not None \
                and self.scheduler.base_lr != passed:
            self.scheduler.base_lr = passed
        if opt == "ftrl":
            self.lr = kw.get("learning_rate", 0.1)
        self.idx2name = dict(enumerate(names)) if cfg["idx2name"] else {}
        self.lr_mult = {k: v for k, v in cfg["lr_mult"]}
        self.wd_mult = {n: 0.0 for n in self.idx2name.values()
                        if not (n.endswith("_weight") or n.endswith("_gamma"))}
        self.wd_mult.update({k: v for k, v in cfg["wd_mult"]})
        self.m_schedule = 1.0

    def _mult(self, value, index, mults):
        if index in mults:
            return value * mults[index]
        if index in self.idx2name:
            return value * mults.get(self.idx2name[index], 1.0)
        return value

    def count(self, index):
        self.counts[index] = self.counts.get(index, self.begin) + 1
        self.num_update = max(self.num_update, self.counts[index])
        return self.counts[index]

    def lr_wd(self, index):
        lr = self.scheduler(self.num_update) if self.scheduler is not None else self.lr
        return self._mult(lr, index, self.lr_mult), self._mult(self.wd, index, self.wd_mult)

    def update(self, index, weight, grad, state):
        """One ``updater(index, grad, weight)`` call on float32 arrays."""
        t = self.count(index)
        lr, wd = self.lr_wd(index)
        h = self.hyper
        common = dict(wd=wd, rescale_grad=self.rescale_grad, clip_gradient=self.clip_gradient)
        opt = self.opt
        if opt == "sgd":
            if h["momentum"] > 0:
                return R.multi_sgd_mom_update(weight, grad, *state, lr=lr,
                                              momentum=h["momentum"], **common)
            return R.multi_sgd_update(weight, grad, lr=lr, **common)
        if opt == "nag":
            if h["momentum"] > 0:
                return R.nag_mom_update(weight, grad, *state, lr=lr, momentum=h["momentum"],
                                        **common)
            return R.sgd_update(weight, grad, lr=lr, **common)
        if opt == "signum":
            if h["momentum"] > 0:
                return R.signum_update(weight, grad, *state, lr=lr, momentum=h["momentum"],
                                       wd_lh=h["wd_lh"], **common)
            return R.signsgd_update(weight, grad, lr=lr, **common)
        if opt == "nadam":
            w, m, v, self.m_schedule = R.nadam_update(
                weight, grad, *state, lr=lr, t=t, m_schedule=self.m_schedule, **h, **common)
            return w, m, v
        twin = {"adam": R.adam_update, "adagrad": R.adagrad_update,
                "adadelta": R.adadelta_update, "adamax": R.adamax_update,
                "ftrl": R.ftrl_update, "ftml": R.ftml_update}[opt]
        if opt in ("adam", "adamax", "ftml"):
            common["t"] = t
        return twin(weight, grad, *state, lr=lr, **h, **common)


def replay(opt, c):
    """Run the twins over config ``c``; yield (step, index, name, ours, mxnet)."""
    data, meta = golden(opt)
    cfg = meta["configs"][c]
    side = PythonSide(opt, cfg, meta["names"])
    dtype = cfg["dtype"]
    mp = dtype == "float16"
    nparams = len(meta["shapes"])
    w0 = [data[f"{dtype}_p{i}_w0"] for i in range(nparams)]
    grads = [data[f"{dtype}_p{i}_grads"] for i in range(nparams)]
    weights = [w.astype(np.float32) for w in w0]  # the master copies under mp
    states = [[np.zeros(w.shape, np.float32) for _ in cfg["state_names"]] for w in w0]
    schedule = []
    for step in range(meta["steps"]):
        for i in range(nparams):
            weights[i], *states[i] = side.update(i, weights[i], grads[i][step].astype(np.float32),
                                                 states[i])
            schedule.append(side.m_schedule)
        for i in range(nparams):
            ours = [("weight", weights[i].astype(dtype))] + list(zip(cfg["state_names"],
                                                                      states[i]))
            if mp:
                ours.append(("master", weights[i]))
            for name, value in ours:
                yield step, i, name, value, data[f"c{c}_p{i}_{name}"][step]
    if opt == "nadam":
        yield "all", "all", "m_schedule", np.array(schedule), data[f"c{c}_m_schedule"]


@pytest.mark.parametrize("opt, c", list(all_configs(raising=True)))
def test_golden_records_what_mxnet_refuses(opt, c):
    # Configurations where MXNet itself raises have no trajectory; mxopt's own
    # form must refuse them with a clear error (tested with each optimizer).
    cfg = golden(opt)[1]["configs"][c]
    assert cfg["raises"] and not any(k.startswith(f"c{c}_") for k in golden(opt)[0].files)


@pytest.mark.parametrize("opt, c", list(all_configs()))
def test_twin_matches_mxnet_bitwise(opt, c):
    mismatches = []
    for step, i, name, ours, expected in replay(opt, c):
        assert ours.dtype == expected.dtype, (name, ours.dtype, expected.dtype)
        if not np.array_equal(ours, expected, equal_nan=True):
            mismatches.append((step, i, name))
    assert not mismatches, mismatches[:10]


def test_golden_grid_covers_the_issue():
    for opt in OPTIMIZERS:
        configs = golden(opt)[1]["configs"]
        kw = [cfg["kwargs"] for cfg in configs]
        assert any(k.get("wd", 0) > 0 for k in kw), opt
        assert any(k.get("rescale_grad", 1.0) != 1.0 for k in kw), opt
        clips = {k.get("clip_gradient") for k in kw}
        assert {None, 0.0} <= clips and any(c for c in clips if c), opt
        assert any(k.get("begin_num_update", 0) > 0 for k in kw), opt
        assert any(cfg["scheduler"] and cfg["scheduler"].get("warmup_steps") for cfg in configs)
        assert any(cfg["idx2name"] and cfg["lr_mult"] and cfg["wd_mult"] for cfg in configs)
        assert any(k.get("multi_precision") for k in kw), opt
        own = set(DEFAULTS[opt]) - {"momentum"}
        assert all(any(name in k for k in kw) for name in own), opt
        if opt in ("sgd", "nag", "signum"):
            assert {bool(k.get("momentum", DEFAULTS[opt]["momentum"])) for k in kw} == {False,
                                                                                     True}
    # MXNet's own refusal is on record.
    signum = golden("signum")[1]["configs"]
    assert any("wd_lh" in cfg.get("raises", "") for cfg in signum)


def test_adamax_clip0_is_nan_in_mxnet():
    # Python-side clip_gradient=0 clips every gradient to 0, so u stays 0 and m/u = 0/0.
    data, meta = golden("adamax")
    c = next(i for i, cfg in enumerate(meta["configs"]) if cfg["name"] == "clip0")
    assert np.isnan(data[f"c{c}_p0_weight"]).all()


def test_parsers_match_mxnet():
    """How MXNet receives a Python number, probed on real MXNet (parsing.npz)."""
    data = np.load(os.path.join(FAMILY, "parsing.npz"))
    values = data["values"]
    ours = {
        "kernel_float": np.array([R.kernel_float(float(v)) for v in values]),
        "tuple_float": np.array([R.tuple_float(float(v)) for v in values]),
        "scalar_operand": np.array([R.scalar_operand(float(v), np.float32) for v in values]),
    }
    for name, got in ours.items():
        np.testing.assert_array_equal(got, data[name], err_msg=name)
    # The probe is not vacuous: dmlc's parser is not float32(value).
    assert (data["kernel_float"] != values.astype(np.float32)).sum() > 10


def test_powf_is_the_c_library():
    data = np.load(os.path.join(FAMILY, "parsing.npz"))
    got = np.array([R.powf(b, t) for b, t in zip(data["pow_base"], data["pow_exponent"])])
    np.testing.assert_array_equal(got, data["powf"])


def test_sgd_mom_kernel_matches_mxnet():
    # sgd_mom_update called directly (no optimizer of the ten runs it on dense arrays).
    data = np.load(os.path.join(FAMILY, "kernels.npz"))
    meta = json.loads(str(data["meta"]))
    inputs = np.load(os.path.join(FAMILY, "sgd.npz"))  # the committed run's inputs
    for k, kwargs in enumerate(meta["cases"]):
        for i in range(3):
            w = inputs[f"float32_p{i}_w0"]
            mom = np.zeros_like(w)
            for step, g in enumerate(inputs[f"float32_p{i}_grads"]):
                w, mom = R.sgd_mom_update(w, g, mom, **kwargs)
                np.testing.assert_array_equal(w, data[f"c{k}_p{i}_weight"][step])
                np.testing.assert_array_equal(mom, data[f"c{k}_p{i}_mom"][step])
