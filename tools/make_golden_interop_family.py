"""Golden MXNet 1.9.1 checkpoints of every optimizer mxopt has, for
tests/test_interop_family.py (RMSProp's are tools/make_golden_interop.py's).

Runs only in the side venv (MXNet is never a dependency of mxopt):

    ../mxref/bin/python tools/make_golden_interop_family.py

For each configuration a Gluon Trainer trains a small net (a 4-D convolution
kernel and its bias, BatchNorm, a dense layer; float16 configurations: two dense
layers with multi_precision) for STEPS_BEFORE steps with Parameter lr_mult and
wd_mult and, where the optimizer reads it, an LR scheduler; saves
``{name}.params`` and ``{name}.states`` (``Trainer.save_states``); continues
STEPS_AFTER steps and records the gradients, the final weights and states.

What this script proves with real MXNet, so that the tests (which cannot run
MXNet) only have to show that mxopt's JAX side produces the same things:

1. ``{name}.mxopt.states`` is what mxopt's pure-Python writer
   (``mxopt/_mxformat.py``, loaded by path: NumPy only) writes for the states it
   read. MXNet loads it with ``Trainer.load_states`` and continues bit-identically
   to the uninterrupted run. The tests assert that ``interop.state_to_mxnet`` of
   ``interop.state_from_mxnet`` of ``{name}.states`` serialises to exactly these
   bytes, so the JAX-side export is a file MXNet continues from.
2. ``_mxformat.optimizer_record(<class>, ...)``, what mxopt exports for a run that
   started in mxopt, equals the ``__dict__`` of MXNet's freshly built optimizer,
   and ``scheduler_record`` that of its scheduler; ``{name}.fresh_scheduler.states``
   (the checkpoint with its scheduler replaced by a fresh one, which is what the
   class form's ``Updater.get_states(mxnet=True)`` writes) continues
   bit-identically too, the scheduler catching up with the count.
3. With ``MXOPT_PYTHON`` set to a Python that has JAX (e.g.
   ``MXOPT_PYTHON=../main/.venv/bin/python``; skipped with a message otherwise),
   the handoff the other way: that Python runs mxopt itself
   (``interop.resume``, HANDOFF_STEPS steps of the functional form on MXNet's
   gradients, ``interop.state_to_mxnet`` and ``save_params``) and writes
   ``{name}.jax.states`` / ``{name}.jax.params``; MXNet loads those into a fresh
   Trainer, continues the remaining steps, and must land on the uninterrupted
   run's final weights (rtol 1e-5, atol 1e-6; float16 weights within one
   float16 ulp). The tests check that mxopt still writes those files' arrays.

Deterministic: fixed seeds; rerunning rewrites tests/golden/interop_family/
identically (the JAX handoff files up to XLA's rounding, which the tests allow).
"""
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden_interop as base  # noqa: E402  (MXNet, the net, the data, _mxformat)

mx, gluon, F = base.mx, base.gluon, base.F
ROOT = base.ROOT
OUT = os.path.normpath(os.path.join(ROOT, "tests", "golden", "interop_family"))
STEPS_BEFORE = 3
STEPS_AFTER = 4
HANDOFF_STEPS = 2   # of STEPS_AFTER, run by mxopt before MXNet takes over again
BATCH = base.BATCH

FACTOR = ("FactorScheduler", dict(step=2, factor=0.8, stop_factor_lr=1e-8))

# name -> MXNet optimizer name and options, scheduler, Gluon Parameter multipliers, dtype.
CONFIGS = {
    "sgd": dict(optimizer="sgd", opt=dict(learning_rate=0.05, momentum=0.9, wd=0.001,
                                          clip_gradient=0.5),
                scheduler=FACTOR),
    "nag": dict(optimizer="nag", opt=dict(learning_rate=0.02, momentum=0.8, wd=0.001,
                                          rescale_grad=2.0),
                scheduler=("MultiFactorScheduler", dict(step=[2, 5], factor=0.5))),
    "signum": dict(optimizer="signum", opt=dict(learning_rate=0.01, momentum=0.9, wd_lh=0.001,
                                                wd=0.0001),
                   scheduler=("PolyScheduler", dict(max_update=20, pwr=2))),
    "adagrad": dict(optimizer="adagrad", opt=dict(learning_rate=0.05, eps=1e-6, wd=0.001,
                                                  clip_gradient=1.0),
                    scheduler=("CosineScheduler", dict(max_update=20, final_lr=0.001))),
    "adadelta": dict(optimizer="adadelta", opt=dict(rho=0.85, epsilon=1e-6, wd=0.001,
                                                    clip_gradient=2.0)),
    "adam": dict(optimizer="adam", opt=dict(learning_rate=0.01, beta1=0.8, beta2=0.99,
                                            epsilon=1e-7, wd=0.001, begin_num_update=2),
                 scheduler=("FactorScheduler", dict(step=3, factor=0.7, warmup_steps=4,
                                                    warmup_begin_lr=0.001))),
    "adamax": dict(optimizer="adamax", opt=dict(learning_rate=0.01, beta1=0.85, wd=0.001,
                                                clip_gradient=1.0),
                   scheduler=("PolyScheduler", dict(max_update=30, pwr=1, warmup_steps=2,
                                                    warmup_begin_lr=0.002,
                                                    warmup_mode="constant"))),
    "nadam": dict(optimizer="nadam", opt=dict(learning_rate=0.005, schedule_decay=0.01,
                                              wd=0.001, clip_gradient=1.0),
                  scheduler=FACTOR),
    # Ftrl sets lr after the base class: the scheduler keeps its own base_lr (0.05).
    "ftrl": dict(optimizer="ftrl", opt=dict(learning_rate=0.1, lamda1=0.001, beta=1.0,
                                            wd=0.001),
                 scheduler=("FactorScheduler", dict(step=2, factor=0.8, base_lr=0.05))),
    "ftml": dict(optimizer="ftml", opt=dict(learning_rate=0.01, beta1=0.6, beta2=0.999,
                                            epsilon=1e-8, wd=0.001, clip_gradient=1.0,
                                            begin_num_update=1),
                 scheduler=("MultiFactorScheduler", dict(step=[3, 6], factor=0.6))),
}
# Issue 18's eight. LBSGD's checkpoints fall mid-sum (lbsgd: 7 calls, batch_scale 2,
# its cumgrads hold an array) and right after an update (lbsgd_plain: 3 calls of 3,
# cum_grad is MXNet's int 0). SGLD draws its noise from mx.random: see RANDOM.
# GroupAdaGrad takes 2-D weights only: a dense net without biases ("net": "dense").
PART2 = {
    "lars": dict(optimizer="lars", opt=dict(learning_rate=0.1, momentum=0.9, eta=0.01,
                                            wd=0.001, clip_gradient=1.0),
                 scheduler=FACTOR),
    # The conv bias before BatchNorm has gradients of pure rounding noise, which
    # LAMB's normalisation and trust ratio blow up to steps of 1e-4: any rounding
    # difference after the handoff shows. lr_mult 0 freezes it.
    "lamb": dict(optimizer="lamb", opt=dict(learning_rate=0.01, beta1=0.85, wd=0.001,
                                            lower_bound=0.01, upper_bound=10.0,
                                            begin_num_update=1),
                 lr_mult={"2.weight": 0.5, "0.bias": 0.0}),
    "ccsgd": dict(optimizer="ccsgd", opt=dict(learning_rate=0.05, momentum=0.8, wd=0.001)),
    "test": dict(optimizer="test", opt=dict(rescale_grad=0.01, begin_num_update=2)),  # ascends
    "dcasgd": dict(optimizer="dcasgd", opt=dict(learning_rate=0.05, lamda=0.5, wd=0.001,
                                                clip_gradient=1.0),
                   scheduler=("MultiFactorScheduler", dict(step=[2, 5], factor=0.5))),
    "sgld": dict(optimizer="sgld", opt=dict(learning_rate=0.01, wd=0.001, clip_gradient=0.5)),
    "groupadagrad": dict(optimizer="groupadagrad", opt=dict(learning_rate=0.05, eps=1e-6,
                                                            clip_gradient=1.0),
                         net="dense", lr_mult={"1.weight": 0.5}, wd_mult={}),
    "lbsgd": dict(optimizer="lbsgd", opt=dict(learning_rate=0.05, momentum=0.9, wd=0.001,
                                              batch_scale=2, warmup_strategy="linear",
                                              warmup_epochs=2, updates_per_epoch=4,
                                              begin_epoch=1),
                  scheduler=FACTOR),
    "lbsgd_plain": dict(optimizer="lbsgd", opt=dict(learning_rate=0.05, batch_scale=3,
                                                    warmup_strategy="power2", warmup_epochs=1,
                                                    updates_per_epoch=4, clip_gradient=0.5)),
}
FP16 = ("sgd", "nag", "signum", "adagrad", "adadelta", "adam", "adamax", "nadam", "ftrl",
        "ftml", "lars", "lamb", "test", "dcasgd", "lbsgd")
RANDOM = ("sgld",)  # MXNet's noise is recorded; the tests match the deterministic part
SEED_AFTER = 7      # mx.random's seed for every continuation from a checkpoint
CONFIGS.update(PART2)
for _name, _cfg in list(CONFIGS.items()):
    _cfg.setdefault("scheduler", None)
    _cfg.setdefault("net", "default")
    _cfg["dtype"] = "float32"
    _cfg.setdefault("lr_mult", {"2.weight": 0.5})
    _cfg.setdefault("wd_mult", {"0.bias": 0.0})
    if _name not in FP16:
        continue
    # float16 weights with float32 master copies: the state layout of each class.
    opt16 = {k: v for k, v in _cfg["opt"].items() if k not in ("begin_num_update",)}
    CONFIGS[f"{_name}_fp16"] = dict(optimizer=_cfg["optimizer"],
                                    opt=dict(opt16, multi_precision=True), scheduler=None,
                                    dtype="float16", lr_mult={}, wd_mult={}, net="default")

CLASS_NAMES = {"sgd": "SGD", "nag": "NAG", "signum": "Signum", "adagrad": "AdaGrad",
               "adadelta": "AdaDelta", "adam": "Adam", "adamax": "Adamax", "nadam": "Nadam",
               "ftrl": "Ftrl", "ftml": "FTML", "lars": "LARS", "lamb": "LAMB",
               "ccsgd": "ccSGD", "test": "Test", "dcasgd": "DCASGD", "sgld": "SGLD",
               "groupadagrad": "GroupAdaGrad", "lbsgd": "LBSGD"}


def make_net(cfg):
    if cfg["net"] == "default":
        return base.make_net(cfg["dtype"])
    net = gluon.nn.HybridSequential(prefix="net_")
    with net.name_scope():
        net.add(gluon.nn.Dense(6, in_units=8, use_bias=False, prefix="hidden_"),
                gluon.nn.Dense(4, in_units=6, use_bias=False, prefix="fc_"))
    net.initialize(mx.init.Xavier(rnd_type="gaussian", magnitude=2.0))
    return net


def make_data(cfg, steps):
    if cfg["net"] == "default":
        return base.make_data(cfg["dtype"], steps)
    rng = np.random.RandomState(1234)
    return [(rng.normal(size=(BATCH, 8)).astype("float32"),
             rng.normal(size=(BATCH, 4)).astype("float32")) for _ in range(steps)]


def path(name):
    return os.path.join(OUT, name)


def make_scheduler(cfg):
    if cfg["scheduler"] is None:
        return None
    cls, kwargs = cfg["scheduler"]
    kwargs = dict(kwargs)
    kwargs.setdefault("base_lr", cfg["opt"].get("learning_rate", 0.01))
    return getattr(mx.lr_scheduler, cls)(**kwargs)


def make_trainer(net, cfg):
    kwargs = dict(cfg["opt"])
    sched = make_scheduler(cfg)
    if sched is not None:
        kwargs["lr_scheduler"] = sched
    params = net._collect_params_with_prefix()
    for structural, mult in cfg["lr_mult"].items():
        params[structural].lr_mult = mult
    for structural, mult in cfg["wd_mult"].items():
        params[structural].wd_mult = mult
    return gluon.Trainer(net.collect_params(), cfg["optimizer"], kwargs, kvstore=None)


def close(got, want, dtype):
    if dtype == "float16":
        # One float16 ulp at the value's scale.
        ulp = np.spacing(np.abs(want).astype(np.float16)).astype(np.float32)
        return np.all(np.abs(got.astype(np.float32) - want.astype(np.float32)) <= ulp)
    return np.allclose(got, want, rtol=1e-5, atol=1e-6)


def continue_from(cfg, params_file, states_file, data, want, exact=True):
    """A fresh net and Trainer from the files, continued over ``data``."""
    net = make_net(cfg)
    net.load_parameters(params_file)
    trainer = make_trainer(net, cfg)
    trainer.load_states(states_file)
    mx.random.seed(SEED_AFTER)  # SGLD's noise: the uninterrupted run's draws
    for x, y in data:
        base.train_step(net, trainer, x, y)
    got = base.weights(net)
    if want is None:  # SGLD after mxopt's steps: other noise, other weights
        assert trainer._optimizer.num_update == cfg["final_num_update"], states_file
        return
    for k, v in want.items():
        ok = np.array_equal(got[k], v) if exact else close(got[k], v, cfg["dtype"])
        assert got[k].dtype == v.dtype and ok, (states_file, k, np.abs(got[k] - v).max())


def check_fresh_record(cfg):
    """optimizer_record reproduces MXNet's constructor (what mxopt exports)."""
    kwargs = dict(cfg["opt"])
    sched = make_scheduler(cfg)
    opt = mx.optimizer.create(cfg["optimizer"], lr_scheduler=sched, **kwargs)
    want = base.optimizer_dict(opt)
    sched_record = None
    if opt.lr_scheduler is not None:
        sched_record = F.MXNetObject(f"mxnet.lr_scheduler.{type(opt.lr_scheduler).__name__}",
                                     dict(opt.lr_scheduler.__dict__))
    own = {k: v for k, v in kwargs.items() if k not in (
        "learning_rate", "wd", "rescale_grad", "clip_gradient", "multi_precision",
        "begin_num_update")}
    if "begin_epoch" in own:  # what LBSGD keeps of it
        own["init_updates"] = own.pop("begin_epoch") * own["updates_per_epoch"]
    base_args = {k: kwargs[k] for k in ("learning_rate", "wd", "rescale_grad", "clip_gradient",
                                        "multi_precision", "begin_num_update") if k in kwargs}
    fresh = F.optimizer_record(CLASS_NAMES[cfg["optimizer"]], lr_scheduler=sched_record,
                               **base_args, **own)
    got = base.record_dict(fresh)
    assert got == want, (cfg["optimizer"], got, want)
    assert list(got) == list(want), (cfg["optimizer"], list(got), list(want))


HANDOFF = r"""
import json, sys
import jax, numpy as np, optax
jax.config.update("jax_enable_x64", True)  # as the tests run
from mxopt import interop as I
job = json.loads(sys.argv[1])
z = np.load(job["npz"])
params = I.load_params(job["params"])
ckpt = I.load_states(job["states"])
# Keyed by the Trainer's full names, the leaves flatten in its update order (Nadam's
# m_schedule advances leaf by leaf in that order).
full = dict(zip(job["structural_names"], job["full_names"]))
index_map = I.trainer_index_map(job["full_names"])
# LARS keeps the rate of leaves named ...gamma/beta/bias; a Gluon Trainer gives MXNet
# no names, so every parameter gets the trust ratio: leaves one level deeper
# ('net_bn_gamma/w') follow that.
nest = (lambda v: {"w": v}) if job["nest"] else (lambda v: v)
unnest = (lambda v: v["w"]) if job["nest"] else (lambda v: v)
if job["nest"]:
    index_map = {i: f"{n}/w" for i, n in index_map.items()}
trainable = {full[k]: nest(v) for k, v in params.items() if "running_" not in k}
mults = {k: {int(i): m for i, m in job[k].items()}  # JSON keys are strings
         for k in ("param_lr_mult", "param_wd_mult")}
key = {} if job["key"] is None else {"key": jax.random.key(job["key"])}  # SGLD's
resumed = I.resume(ckpt, trainable, index_map, **mults, **key)
tx = resumed.transformation()
p, state = resumed.params, resumed.state
for t in range(job["steps"]):
    grads = {full[k]: nest(z[f"grad/{t}/{k}"]) for k in job["structural_names"]
             if full[k] in trainable}
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
I.save_states(job["out_states"], I.state_to_mxnet(state, p, index_map, ckpt.optimizer))
I.save_params(job["out_params"], {k: np.asarray(unnest(p[full[k]]) if full[k] in p else v)
                                  for k, v in params.items()})
"""


def jax_handoff(name, cfg, meta, data, want):
    python = os.environ.get("MXOPT_PYTHON")
    if not python:
        print(f"{name}: MXOPT_PYTHON not set, JAX handoff skipped")
        return False
    index_of = {structural: i for i, structural in enumerate(
        s for _, s in sorted(zip(meta["full_names"], meta["structural_names"])))}
    job = dict(npz=path(f"{name}.npz"), params=path(f"{name}.params"),
               states=path(f"{name}.states"), full_names=meta["full_names"],
               structural_names=meta["structural_names"],
               param_lr_mult={index_of[k]: v for k, v in cfg["lr_mult"].items()},
               param_wd_mult={index_of[k]: v for k, v in cfg["wd_mult"].items()},
               steps=HANDOFF_STEPS, out_states=path(f"{name}.jax.states"),
               out_params=path(f"{name}.jax.params"),
               key=SEED_AFTER if name in RANDOM else None,
               nest=cfg["optimizer"] == "lars")
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([python, "-c", HANDOFF, json.dumps(job)], check=True, env=env, cwd=ROOT)
    # BatchNorm's running statistics move in MXNet's forward passes, not in the
    # optimizer's steps mxopt took: only the trained weights are compared.
    trained = {k: v for k, v in want.items() if "running_" not in k}
    continue_from(dict(cfg, final_num_update=meta["final_num_update"]),
                  path(f"{name}.jax.params"), path(f"{name}.jax.states"),
                  data[STEPS_BEFORE + HANDOFF_STEPS:], None if name in RANDOM else trained,
                  exact=False)
    return True


def state_arrays(state, label):
    """``{label/0/1: array}`` for a state entry's nested tuples (None left out)."""
    if isinstance(state, (tuple, list)):
        out = {}
        for j, x in enumerate(state):
            out.update(state_arrays(x, f"{label}/{j}"))
        return out
    return {} if state is None else {label: state.asnumpy()}


def make_run(name, cfg):
    mx.random.seed(42)
    np.random.seed(42)
    net = make_net(cfg)
    trainer = make_trainer(net, cfg)
    data = make_data(cfg, STEPS_BEFORE + STEPS_AFTER)
    for x, y in data[:STEPS_BEFORE]:
        base.train_step(net, trainer, x, y)
    net.save_parameters(path(f"{name}.params"))
    trainer.save_states(path(f"{name}.states"))
    grads, before, noise = [], [], []
    mx.random.seed(SEED_AFTER)
    for x, y in data[STEPS_BEFORE:]:
        before.append(base.weights(net))
        with recording_noise() as drawn:
            grads.append(base.train_step(net, trainer, x, y))
        noise.append(drawn)
    final = base.weights(net)
    final_states = trainer._updaters[0].states
    full_names = list(net.collect_params().keys())
    structural = list(net._collect_params_with_prefix().keys())

    # 1. mxopt's writer, on the states it read: MXNet continues bit-identically.
    with open(path(f"{name}.states"), "rb") as f:
        loaded = F.loads_states(f.read(), f"{name}.states")
    F.atomic_write(path(f"{name}.mxopt.states"), F.dumps_states(loaded))
    continue_from(cfg, path(f"{name}.params"), path(f"{name}.mxopt.states"),
                  data[STEPS_BEFORE:], final)
    # 2. A fresh record is MXNet's constructor's __dict__.
    check_fresh_record(cfg)
    # 2b. A freshly built scheduler catches up with the checkpoint's count: what the
    #     class form (Updater.get_states(mxnet=True)) writes for its scheduler.
    if cfg["scheduler"] is not None:
        cls, kwargs = cfg["scheduler"]
        kwargs = dict(kwargs, base_lr=kwargs.get("base_lr", cfg["opt"].get("learning_rate")))
        fresh_sched = F.scheduler_record(cls, **kwargs)
        want_sched = make_scheduler(cfg).__dict__
        assert dict(fresh_sched.fields) == want_sched, (fresh_sched, want_sched)
        assert list(fresh_sched.fields) == list(want_sched)
        fresh = F.MXNetStates(loaded.states, loaded.optimizer.replace(lr_scheduler=fresh_sched))
        F.atomic_write(path(f"{name}.fresh_scheduler.states"), F.dumps_states(fresh))
        continue_from(cfg, path(f"{name}.params"), path(f"{name}.fresh_scheduler.states"),
                      data[STEPS_BEFORE:], final)

    arrays = {}
    for s, g in enumerate(grads):
        for k, v in g.items():
            arrays[f"grad/{s}/{k}"] = v
    for k, v in final.items():
        arrays[f"final/{k}"] = v
    for idx, state in final_states.items():
        arrays.update(state_arrays(state, f"final_state/{idx}"))
    if name in RANDOM:
        # MXNet's weights before each step and the noise it drew (by Trainer index):
        # what the tests need to match the deterministic part step by step.
        for s, (w, n) in enumerate(zip(before, noise)):
            arrays.update({f"before/{s}/{k}": v for k, v in w.items()})
            arrays.update({f"noise/{s}/{i}": v for i, v in n.items()})
    opt = trainer._optimizer
    cumgrads = getattr(opt, "cumgrads", None)
    meta = dict(config=cfg, steps_before=STEPS_BEFORE, steps_after=STEPS_AFTER, batch=BATCH,
                handoff_steps=HANDOFF_STEPS, full_names=full_names, structural_names=structural,
                final_num_update=opt.num_update,
                final_m_schedule=getattr(opt, "m_schedule", None),
                final_cur_lr=getattr(opt, "cur_lr", None),
                final_num_cums=sorted({c["num_cums"] for c in cumgrads.values()})
                if cumgrads else None)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path(f"{name}.npz"), **arrays)
    # 3. mxopt's JAX side, handed over and back.
    handed = jax_handoff(name, cfg, meta, data, final)
    return handed


class recording_noise:
    """Records the normal draws of MXNet's SGLD.update by parameter index."""

    def __enter__(self):
        import mxnet.optimizer.optimizer as mo
        self.module, self.drawn = mo, {}
        self.normal, self.update = mo.normal, mo.SGLD.update
        state = {}

        def update(opt, index, weight, grad, st):
            state["index"] = index
            return self.update(opt, index, weight, grad, st)

        def normal(*args, **kwargs):
            out = self.normal(*args, **kwargs)
            self.drawn[state["index"]] = out.asnumpy().copy()
            return out

        mo.normal, mo.SGLD.update = normal, update
        return self.drawn

    def __exit__(self, *exc):
        self.module.normal, self.module.SGLD.update = self.normal, self.update


def check_allowed_classes():
    """The restricted unpickler allows exactly MXNet's registered optimizers (plus
    the base class), as tests/test_interop_family.py's REGISTRY lists them."""
    registry = {name: f"{k.__module__}.{k.__name__}"
                for name, k in mx.optimizer.Optimizer.opt_registry.items()}
    assert len(registry) == 19, sorted(registry)
    assert set(registry.values()) | {"mxnet.optimizer.optimizer.Optimizer"} == \
        F.OPTIMIZER_CLASSES, sorted(registry.values())
    schedulers = {f"mxnet.lr_scheduler.{n}" for n in dir(mx.lr_scheduler)
                  if isinstance(getattr(mx.lr_scheduler, n), type)
                  and issubclass(getattr(mx.lr_scheduler, n), mx.lr_scheduler.LRScheduler)}
    assert schedulers == F.SCHEDULER_CLASSES, sorted(schedulers)


def main():
    os.makedirs(OUT, exist_ok=True)
    check_allowed_classes()
    only = sys.argv[1:]
    handed = [make_run(name, cfg) for name, cfg in CONFIGS.items() if not only or name in only]
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files to {OUT} ({total / 1024:.0f} KiB); all MXNet "
          f"cross-checks passed" + ("" if all(handed) else " (JAX handoff skipped)"))


if __name__ == "__main__":
    main()
