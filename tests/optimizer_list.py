"""The one list of optimizer paths the contract suite runs over.

Every mxopt optimizer joins it: each entry is one path (the fused alias, or the
composable chain where there is one) with one option set that matters. The
contract suite (tests/test_contracts.py) and its sharded half
(tests/contract_sharded.py, 8 simulated devices) run every check over every
entry, so a new optimizer gets them all by adding its entries here.

Params are always a tree with the float leaves ``w`` (a matrix) and ``b`` (a
vector), so that multiplier option sets can name them.
"""
from typing import Callable, NamedTuple, Optional

import optax

import mxopt


class Entry(NamedTuple):
    id: str
    make: Callable[..., optax.GradientTransformation]  # make(**kwargs)
    kwargs: dict
    family: str            # entries of one family and option set must agree
    path: str              # "fused" or "chain"
    exact_paths: bool      # whether the chain agrees with the fused path bit for bit
    learning_rate_arg: Optional[str] = "learning_rate"  # None: the optimizer ignores it
    # False where MXNet keeps float32 state only: float16/bfloat16 params need
    # multi_precision, and init says so.
    low_precision_state: bool = True
    # Whether a jitted step equals the eager one bit for bit. False where the
    # optimizer computes from the update count (bias corrections, powers,
    # Nadam's schedule): eagerly on the host as MXNet (float64, MXNet's
    # parsing), under jit on device, an ulp apart at times.
    jit_exact: bool = True
    # The convergence problems' learning rates are multiplied by this (Ftrl's
    # per-coordinate rate lr / (beta + sqrt(n)) shrinks as gradients add up).
    problem_lr_scale: float = 1.0
    # How far from the optimum bfloat16 leaves without master weights may stall;
    # None: they are only required to train (finite, lower loss).
    low_precision_bound: Optional[float] = 0.4

    @property
    def multi_precision(self):
        return bool(self.kwargs.get("multi_precision"))

    def build(self, **overrides):
        return self.make(**{**self.kwargs, **overrides})


def _mxnet_schedule():
    # Changes within the first steps, then floors, so that runs still converge.
    return mxopt.lr_scheduler.FactorScheduler(step=2, factor=0.9, stop_factor_lr=0.01,
                                              base_lr=0.05)


# Option sets shared by every optimizer that takes the Optimizer-base options.
BASE_OPTION_SETS = {
    "plain": {},
    "wd+clips": dict(wd=0.01, rescale_grad=0.5, clip_gradient=0.3),
    "multipliers": dict(wd=0.01, lr_mult={"w": 0.5}, wd_mult={"b": 0.0}),
    "mxnet-schedule": dict(learning_rate=_mxnet_schedule(), begin_num_update=3),
    "optax-schedule": dict(learning_rate=optax.exponential_decay(0.05, 2, 0.9, end_value=0.01)),
    "multi_precision": dict(multi_precision=True),
    "skip_nonfinite": dict(skip_nonfinite=True),
}

RMSPROP_OPTION_SETS = {
    **BASE_OPTION_SETS,
    "centered": dict(centered=True),
    "wd+clips+clip_weights": dict(wd=0.01, rescale_grad=0.5, clip_gradient=0.3,
                                  clip_weights=2.0),
    "centered-wd+clips+clip_weights": dict(centered=True, wd=0.01, rescale_grad=0.5,
                                           clip_gradient=0.3, clip_weights=2.0),
    "centered-multi_precision-skip_nonfinite": dict(centered=True, multi_precision=True,
                                                    skip_nonfinite=True),
}


def _rmsprop_entries():
    entries = []
    for name, kwargs in RMSPROP_OPTION_SETS.items():
        kwargs = {"learning_rate": 0.05, **kwargs}
        for path, make in (("fused", mxopt.rmsprop), ("chain", mxopt.rmsprop_chain)):
            entries.append(Entry(f"rmsprop-{path}-{name}", make, kwargs, f"rmsprop-{name}",
                                 path, exact_paths=not kwargs.get("centered")))
    return entries


# Adam, Adamax, Nadam, Ftrl, FTML: fused only (no chain), a few option sets each.
ADAM_FAMILY_OPTION_SETS = {
    name: BASE_OPTION_SETS[name]
    for name in ("plain", "wd+clips", "multipliers", "mxnet-schedule", "multi_precision",
                 "skip_nonfinite")
}


def _adam_family_entries():
    # (maker, jit_exact, low_precision_state)
    makers = {"adam": (mxopt.adam, False, True), "adamax": (mxopt.adamax, False, True),
              "nadam": (mxopt.nadam, False, True), "ftrl": (mxopt.ftrl, True, False),
              "ftml": (mxopt.ftml, False, True)}
    entries = []
    for opt, (make, jit_exact, low_precision_state) in makers.items():
        for name, kwargs in ADAM_FAMILY_OPTION_SETS.items():
            kwargs = {"learning_rate": 0.05, **kwargs}
            if opt != "ftrl":
                # Hyperparameters are rounded to the leaf's dtype, as MXNet does,
                # and the default beta2=0.999 is 1.0 in bfloat16: the second
                # moment of Adam and Nadam then never moves off 0 (FTML divides
                # by 1 - beta2**t = 0) on bfloat16 leaves without master
                # weights. inject_hyperparams also casts them to the params'
                # dtype (bfloat16 with multi_precision here).
                kwargs["beta2"] = 0.99
            if opt == "adamax":
                # Adamax's m / u is 0 / 0 = NaN where a gradient has been exactly
                # 0 from the start (MXNet's formula), as b's is at Rosenbrock's
                # start; a little decay keeps the gradient off 0.
                kwargs.setdefault("wd", 1e-4)
                if "wd_mult" in kwargs:
                    kwargs["wd_mult"] = {"w": 0.0}
            if opt == "ftrl" and name == "mxnet-schedule":
                kwargs["learning_rate"] = mxopt.lr_scheduler.FactorScheduler(
                    step=2, factor=0.9, stop_factor_lr=0.4, base_lr=0.5)
            entries.append(Entry(f"{opt}-fused-{name}", make, kwargs, f"{opt}-{name}", "fused",
                                 exact_paths=True, jit_exact=jit_exact,
                                 low_precision_state=low_precision_state,
                                 problem_lr_scale=40.0 if opt == "ftrl" else 1.0,
                                 # FTML rebuilds w = -z / d from bfloat16 state every
                                 # step and stalls 0.4 to 1.5 from Rosenbrock's minimum.
                                 low_precision_bound=None if opt == "ftml" else 0.4))
    return entries


ENTRIES = _rmsprop_entries() + _adam_family_entries()
FUSED = [e for e in ENTRIES if e.path == "fused"]
# Families with both paths, which test_fused_and_chained_paths_agree compares.
FAMILIES = sorted({e.family for e in ENTRIES if e.path == "chain"})
