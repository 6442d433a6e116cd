"""Write golden learning-rate schedules computed by real MXNet 1.9.1.

Runs only in the side venv (MXNet is never a dependency of mxopt):

    python3 -m venv ../mxref
    ../mxref/bin/pip install numpy==1.23.5 mxnet==1.9.1
    ../mxref/bin/python tools/make_golden_schedulers.py

Writes tests/golden/schedulers.npz, deterministically:

* ``seq{i}_*``: for each configuration in SEQUENCES, MXNet's float64 values for
  ``num_update = 0 .. STEPS - 1``, called in increasing order on one object (as
  MXNet's optimizer calls it), optionally after setting ``base_lr`` the way
  MXNet's Optimizer does. Stored losslessly and compactly: the lengths of the
  runs of equal values (``_runs``) and the second differences of the runs'
  IEEE bit patterns (``_bits``, int64, wrapping); decode with
  ``np.repeat(np.cumsum(np.cumsum(bits)).view(np.float64), runs)``.
* ``opt{i}_*``: for each configuration in OPTIMIZERS, an ``mx.optimizer.RMSProp``
  with ``lr_scheduler`` and ``begin_num_update`` run for OPT_STEPS updates on one
  float32 parameter: the update numbers and rates the optimizer read from the
  scheduler, and the weight after each update.
* ``meta``: JSON with the configurations and VALIDATION, the outcome of
  constructing (and then calling) each scheduler setting in MXNet: ``"ok"``,
  ``"init:<Exception>"`` or ``"call:<Exception>"``.
"""
import numpy as np

from _mxref import import_mxnet, save_golden

mx = import_mxnet()
STEPS = 10_000
OPT_STEPS = 60

F, M, P, C = "FactorScheduler", "MultiFactorScheduler", "PolyScheduler", "CosineScheduler"

SEQUENCES = [
    # FactorScheduler
    dict(id="factor-stop-reached", cls=F, kwargs=dict(step=250, factor=0.5, base_lr=0.1)),
    dict(id="factor-warmup-linear", cls=F, kwargs=dict(
        step=100, factor=0.9, base_lr=0.05, warmup_steps=500, warmup_begin_lr=0.001)),
    dict(id="factor-warmup-constant-stop", cls=F, kwargs=dict(
        step=7, factor=0.99, stop_factor_lr=1e-3, base_lr=0.01, warmup_steps=300,
        warmup_begin_lr=0.002, warmup_mode="constant")),
    dict(id="factor-5000-reductions", cls=F, kwargs=dict(
        step=2, factor=0.9993, stop_factor_lr=0, base_lr=1)),
    dict(id="factor-base-below-stop", cls=F, kwargs=dict(step=1000, base_lr=5e-9)),
    dict(id="factor-zero", cls=F, kwargs=dict(
        step=3000, factor=0, stop_factor_lr=1e-6, base_lr=0.3)),
    dict(id="factor-base-lr-set", cls=F, set_base_lr=0.05, kwargs=dict(
        step=500, factor=0.7, base_lr=0.2, warmup_steps=1000, warmup_begin_lr=0.01)),
    # MultiFactorScheduler
    dict(id="multifactor", cls=M, kwargs=dict(step=[1000, 2500, 4000, 7000], factor=0.3,
                                              base_lr=0.1)),
    dict(id="multifactor-steps-in-warmup", cls=M, kwargs=dict(
        step=[1, 2, 3, 5000], factor=0.5, base_lr=0.04, warmup_steps=2000)),
    dict(id="multifactor-warmup-constant", cls=M, kwargs=dict(
        step=[9999], factor=0.1, base_lr=0.01, warmup_steps=10, warmup_begin_lr=0.005,
        warmup_mode="constant")),
    dict(id="multifactor-base-lr-set", cls=M, set_base_lr=0.5, kwargs=dict(
        step=[300, 3000], factor=0.25, base_lr=0.08, warmup_steps=200, warmup_begin_lr=0.001)),
    # PolyScheduler
    dict(id="poly-pwr2", cls=P, kwargs=dict(max_update=3000, base_lr=0.1)),
    dict(id="poly-pwr1-warmup-linear", cls=P, kwargs=dict(
        max_update=12000, base_lr=0.01, pwr=1, final_lr=1e-4, warmup_steps=1000)),
    dict(id="poly-pwr3-warmup-constant", cls=P, kwargs=dict(
        max_update=2000, base_lr=0.05, pwr=3, final_lr=0.001, warmup_steps=200,
        warmup_begin_lr=0.01, warmup_mode="constant")),
    dict(id="poly-pwr0.9", cls=P, kwargs=dict(max_update=1500, base_lr=0.02, pwr=0.9)),
    dict(id="poly-base-lr-set", cls=P, set_base_lr=0.3, kwargs=dict(
        max_update=800, base_lr=0.03, warmup_steps=50, warmup_begin_lr=0.003)),
    # CosineScheduler
    dict(id="cosine", cls=C, kwargs=dict(max_update=5000, base_lr=0.1)),
    dict(id="cosine-warmup-linear", cls=C, kwargs=dict(
        max_update=10000, base_lr=0.05, final_lr=1e-5, warmup_steps=800, warmup_begin_lr=1e-3)),
    dict(id="cosine-warmup-constant", cls=C, kwargs=dict(
        max_update=1000, base_lr=0.03, final_lr=0.002, warmup_steps=100, warmup_begin_lr=0.02,
        warmup_mode="constant")),
    dict(id="cosine-base-lr-set", cls=C, set_base_lr=0.2, kwargs=dict(
        max_update=700, base_lr=0.04, final_lr=0.001, warmup_steps=30)),
]

# learning_rate is what the Optimizer is given; it overwrites the scheduler's
# base_lr when they differ (see mxnet.optimizer.Optimizer.__init__).
OPTIMIZERS = [
    dict(id="factor-warmup", cls=F, learning_rate=0.05, begin_num_update=0, kwargs=dict(
        step=7, factor=0.5, base_lr=0.05, warmup_steps=10, warmup_begin_lr=0.005)),
    dict(id="factor-learning-rate-overrides", cls=F, learning_rate=0.02, begin_num_update=3,
         kwargs=dict(step=5, factor=0.8, base_lr=0.05, warmup_steps=8, warmup_begin_lr=0.01)),
    dict(id="multifactor-resumed", cls=M, learning_rate=0.03, begin_num_update=37,
         kwargs=dict(step=[20, 40, 50, 70, 90], factor=0.6, base_lr=0.03)),
    dict(id="poly-resumed", cls=P, learning_rate=0.04, begin_num_update=5, kwargs=dict(
        max_update=50, base_lr=0.04, pwr=2, final_lr=0.001, warmup_steps=12,
        warmup_begin_lr=0.002, warmup_mode="constant")),
    dict(id="cosine-warmup", cls=C, learning_rate=0.01, begin_num_update=0, kwargs=dict(
        max_update=45, base_lr=0.01, final_lr=1e-4, warmup_steps=15)),
]
OPT_KWARGS = dict(gamma1=0.9, gamma2=0.9, epsilon=1e-8, centered=False, wd=0.01,
                  rescale_grad=0.5, clip_gradient=None)


def _case(case_id, cls, arg, **kwargs):
    return dict(id=case_id, cls=cls, arg=arg, kwargs=kwargs)


# Settings to try; `arg` names the argument at fault (for mxopt's error message).
VALIDATION = [
    _case("warmup-begin-above-base", F, "warmup_begin_lr", step=10, base_lr=0.01,
          warmup_begin_lr=0.02),
    _case("warmup-begin-above-base-with-warmup", F, "warmup_begin_lr", step=10, base_lr=0.01,
          warmup_begin_lr=0.02, warmup_steps=5),
    _case("warmup-begin-equals-base", F, None, step=10, base_lr=0.01, warmup_begin_lr=0.01,
          warmup_steps=5),
    _case("warmup-steps-negative", F, "warmup_steps", step=10, warmup_steps=-1),
    _case("warmup-steps-float", F, "warmup_steps", step=10, warmup_steps=2.0),
    _case("warmup-steps-bool", F, "warmup_steps", step=10, warmup_steps=True),
    _case("warmup-steps-none", F, "warmup_steps", step=10, warmup_steps=None),
    _case("warmup-mode-unknown", F, "warmup_mode", step=10, warmup_mode="cosine"),
    _case("warmup-mode-capitalised", F, "warmup_mode", step=10, warmup_mode="Linear"),
    _case("warmup-mode-none", F, "warmup_mode", step=10, warmup_mode=None),
    _case("warmup-mode-constant", F, None, step=10, warmup_steps=3, warmup_mode="constant"),
    _case("base-lr-negative", F, "base_lr", step=10, base_lr=-0.1),
    _case("base-lr-negative-warmup-negative", F, "base_lr", step=10, base_lr=-0.1,
          warmup_begin_lr=-0.2),
    _case("base-lr-nan", F, "base_lr", step=10, base_lr=float("nan")),
    _case("base-lr-inf", F, "base_lr", step=10, base_lr=float("inf")),
    _case("base-lr-none", F, "base_lr", step=10, base_lr=None),
    _case("base-lr-string", F, "base_lr", step=10, base_lr="0.1"),
    _case("base-lr-zero", F, None, step=10, base_lr=0),
    _case("warmup-begin-nan", F, "warmup_begin_lr", step=10, warmup_begin_lr=float("nan")),
    _case("factor-step-zero", F, "step", step=0),
    _case("factor-step-negative", F, "step", step=-5),
    _case("factor-step-one", F, None, step=1),
    _case("factor-step-float", F, "step", step=2.5),
    _case("factor-step-bool", F, "step", step=True),
    _case("factor-above-one", F, "factor", step=10, factor=1.0001),
    _case("factor-one", F, None, step=10, factor=1),
    _case("factor-zero", F, None, step=10, factor=0),
    _case("factor-negative", F, "factor", step=10, factor=-0.5),
    _case("factor-nan", F, "factor", step=10, factor=float("nan")),
    _case("stop-factor-lr-zero", F, None, step=10, factor=0.5, stop_factor_lr=0),
    _case("stop-factor-lr-negative", F, None, step=10, factor=0.5, stop_factor_lr=-1.0),
    _case("stop-factor-lr-nan", F, "stop_factor_lr", step=10, factor=0.5,
          stop_factor_lr=float("nan")),
    _case("stop-factor-lr-inf", F, "stop_factor_lr", step=10, factor=0.5,
          stop_factor_lr=float("inf")),
    _case("multifactor-empty", M, "step", step=[]),
    _case("multifactor-tuple", M, "step", step={"__tuple__": [10, 20]}),
    _case("multifactor-int", M, "step", step=10),
    _case("multifactor-repeated", M, "step", step=[10, 10]),
    _case("multifactor-decreasing", M, "step", step=[20, 10]),
    _case("multifactor-zero", M, "step", step=[0, 10]),
    _case("multifactor-negative-first", M, "step", step=[-3]),
    _case("multifactor-valid", M, None, step=[10, 20, 30], factor=0.5),
    _case("multifactor-float-step", M, "step", step=[5.5, 10]),
    _case("multifactor-factor-above-one", M, "factor", step=[10], factor=2),
    _case("multifactor-factor-negative", M, "factor", step=[10], factor=-1),
    _case("multifactor-warmup-begin-above-base", M, "warmup_begin_lr", step=[10],
          base_lr=0.01, warmup_begin_lr=0.5),
    _case("poly-max-update-zero", P, "max_update", max_update=0),
    _case("poly-max-update-negative", P, "max_update", max_update=-1),
    _case("poly-max-update-float", P, "max_update", max_update=100.0),
    _case("poly-max-update-bool", P, "max_update", max_update=True),
    _case("poly-warmup-equals-max-update", P, "warmup_steps", max_update=100, warmup_steps=100),
    _case("poly-warmup-beyond-max-update", P, "warmup_steps", max_update=100, warmup_steps=150),
    _case("poly-warmup-below-max-update", P, None, max_update=100, warmup_steps=99),
    _case("poly-pwr-negative", P, "pwr", max_update=100, pwr=-1),
    _case("poly-pwr-nan", P, "pwr", max_update=100, pwr=float("nan")),
    _case("poly-pwr-fraction", P, None, max_update=100, pwr=0.9),
    _case("poly-pwr-zero", P, None, max_update=100, pwr=0),
    _case("poly-final-above-base", P, None, max_update=100, base_lr=0.01, final_lr=0.5),
    _case("poly-final-negative", P, "final_lr", max_update=100, final_lr=-0.001),
    _case("poly-warmup-mode-unknown", P, "warmup_mode", max_update=100, warmup_mode="exp"),
    _case("cosine-max-update-zero", C, "max_update", max_update=0),
    _case("cosine-max-update-float", C, "max_update", max_update=10.5),
    _case("cosine-max-update-bool", C, "max_update", max_update=True),
    _case("cosine-max-update-one", C, None, max_update=1),
    _case("cosine-warmup-equals-max-update", C, "warmup_steps", max_update=40, warmup_steps=40),
    _case("cosine-final-inf", C, "final_lr", max_update=40, final_lr=float("inf")),
    _case("cosine-warmup-begin-above-base", C, "warmup_begin_lr", max_update=40,
          warmup_begin_lr=1.0),
]


def decode_kwargs(kwargs):
    """JSON has no tuples: {"__tuple__": [...]} stands for one."""
    return {k: tuple(v["__tuple__"]) if isinstance(v, dict) and "__tuple__" in v else v
            for k, v in kwargs.items()}


def make(cls, kwargs):
    return getattr(mx.lr_scheduler, cls)(**decode_kwargs(kwargs))


def encode(values):
    """Second differences of the bit patterns of the runs of equal values, and
    the runs' lengths (smooth schedules have small second differences)."""
    values = np.asarray(values, np.float64)
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    runs = np.diff(np.concatenate((starts, [len(values)])))
    bits = values[starts].view(np.int64)
    with np.errstate(over="ignore"):
        second = np.diff(bits, n=2, prepend=np.zeros(2, np.int64))
    return second, runs.astype(np.int32)


def sequence(cfg):
    sched = make(cfg["cls"], cfg["kwargs"])
    if "set_base_lr" in cfg:
        sched.base_lr = cfg["set_base_lr"]
    values = [sched(n) for n in range(STEPS)]
    assert all(isinstance(x, (int, float)) for x in values)
    return [float(x) for x in values]


def optimizer_run(cfg):
    sched = make(cfg["cls"], cfg["kwargs"])
    calls = []
    base = type(sched)

    class Recording(base):
        def __call__(self, num_update):
            lr = base.__call__(self, num_update)
            calls.append((num_update, float(lr)))
            return lr

    sched.__class__ = Recording
    opt = mx.optimizer.RMSProp(learning_rate=cfg["learning_rate"], lr_scheduler=sched,
                               begin_num_update=cfg["begin_num_update"], **OPT_KWARGS)
    rng = np.random.RandomState(7)
    w0 = rng.normal(0.0, 0.5, size=5).astype(np.float32)
    weight = mx.nd.array(w0, dtype="float32")
    grads = rng.normal(0.0, 1.0, size=(OPT_STEPS, 5)).astype(np.float32)
    state = opt.create_state(0, weight)
    weights = []
    for step in range(OPT_STEPS):
        opt.update(0, weight, mx.nd.array(grads[step], dtype="float32"), state)
        weights.append(weight.asnumpy())
    # One parameter: one scheduler read per update.
    assert len(calls) == OPT_STEPS, len(calls)
    nums = np.array([n for n, _ in calls], np.int64)
    lrs = np.array([lr for _, lr in calls], np.float64)
    return dict(w0=w0, grads=grads, nums=nums, lrs=lrs, weights=np.stack(weights))


def outcome(case):
    try:
        sched = make(case["cls"], case["kwargs"])
    except Exception as e:  # noqa: BLE001 - recording what MXNet raises is the point
        return f"init:{type(e).__name__}"
    horizon = 2 * case["kwargs"].get("max_update", 50) + 2
    try:
        for n in range(max(horizon, 2)):
            sched(n)
    except Exception as e:  # noqa: BLE001
        return f"call:{type(e).__name__}"
    return "ok"


def main():
    arrays = {}
    for i, cfg in enumerate(SEQUENCES):
        arrays[f"seq{i}_bits"], arrays[f"seq{i}_runs"] = encode(sequence(cfg))
    for i, cfg in enumerate(OPTIMIZERS):
        for key, value in optimizer_run(cfg).items():
            arrays[f"opt{i}_{key}"] = value
    validation = [dict(case, mxnet=outcome(case)) for case in VALIDATION]
    meta = dict(mxnet=mx.__version__, numpy=np.__version__, steps=STEPS, opt_steps=OPT_STEPS,
                sequences=SEQUENCES, optimizers=OPTIMIZERS, optimizer_kwargs=OPT_KWARGS,
                validation=validation)
    for case in validation:
        print(f"{case['id']:40s} {case['mxnet']}")
    save_golden("schedulers.npz", arrays, meta,
                f"{len(SEQUENCES)} sequences, {len(OPTIMIZERS)} optimizer runs, "
                f"{len(validation)} validation cases")


if __name__ == "__main__":
    main()
