"""The one list of optimizer paths the contract suite runs over.

Every mxopt optimizer joins it: each entry is one path (the fused alias, or the
composable chain where there is one) with one option set that matters. The
contract suite (tests/test_contracts.py) and its sharded half
(tests/contract_sharded.py, 8 simulated devices) run every check over every
entry, so a new optimizer gets them all by adding its entries here.

Params are always a tree with the float leaves ``w`` (a matrix) and ``b`` (a
vector), so that multiplier option sets can name them; an entry whose optimizer
takes 2-D params only (GroupAdaGrad) gets them as matrices (``Entry.shape``).
"""
import functools
import math
import warnings
from typing import Callable, NamedTuple, Optional

import jax
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
    # test_converges: per problem, option overrides (and "steps") that suit the
    # optimizer's scale, e.g. a rate SGD's momentum stays stable with on Rosenbrock.
    converge: dict = {}
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
    # True for MXNet's Test optimizer, which adds the gradient (w += r * g): on
    # the convergence problems it must climb, finitely, instead of converging.
    ascends: bool = False
    # True where the optimizer trains 2-D params only: MXNet's GroupAdaGrad keeps
    # one history entry per row and asserts a 2-D weight, so the suite's vector
    # leaf b (and every other tree it builds) would be refused at init. The
    # suite's tree builders ask ``shape`` for each float leaf's shape instead of
    # writing it down, and then run every check over these entries unchanged.
    matrices_only: bool = False

    def shape(self, shape):
        """The shape the suite gives a float leaf it would make ``shape``: as is,
        or for ``matrices_only`` as a matrix with the same rows (a vector ``(n,)``
        becomes a column ``(n, 1)``, a scalar ``(1, 1)``, trailing axes fold into
        the columns), so that row sharding and elementwise losses still apply."""
        shape = tuple(shape)
        if not self.matrices_only or len(shape) == 2:
            return shape
        if len(shape) < 2:
            return (shape[0] if shape else 1, 1)
        return (shape[0], math.prod(shape[1:]))

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


ENTRIES = _rmsprop_entries()


# SGD, NAG, Signum, AdaGrad, AdaDelta: fused only (no chain path). SGD's and
# NAG's momentum-free paths keep no per-leaf state and, without master weights,
# stall on Rosenbrock in bfloat16 (no memory to carry a step past half an ulp),
# so they run with multi_precision here.
_MOMENTUM = dict(momentum=0.9)
_MP = dict(multi_precision=True)
_MP_SKIP = dict(multi_precision=True, skip_nonfinite=True)
_MULTIPLIERS_SCHEDULE = dict(BASE_OPTION_SETS["multipliers"],
                             **BASE_OPTION_SETS["mxnet-schedule"])


def _signum_rosenbrock():
    # Sign steps do not shrink near the minimum: a decaying rate lets them settle.
    return dict(learning_rate=optax.linear_schedule(0.005, 0.0, 40000), steps=40000)


FAMILY_OPTION_SETS = {
    # family: (option sets, test_converges overrides)
    "sgd": ({
        "momentum0-multi_precision": dict(_MP),
        "momentum-wd+clips": dict(_MOMENTUM, **BASE_OPTION_SETS["wd+clips"]),
        "momentum-multipliers-schedule": dict(_MOMENTUM, **_MULTIPLIERS_SCHEDULE),
        "momentum-multi_precision-skip_nonfinite": dict(_MOMENTUM, **_MP_SKIP),
    }, {"rosenbrock": dict(learning_rate=0.002, steps=20000)}),  # momentum: lr < 0.0038
    "nag": ({
        "momentum0-wd+clips-multi_precision": dict(BASE_OPTION_SETS["wd+clips"], **_MP),
        "momentum-wd+clips": dict(_MOMENTUM, **BASE_OPTION_SETS["wd+clips"]),
        "momentum-multipliers-schedule": dict(_MOMENTUM, **_MULTIPLIERS_SCHEDULE),
        "momentum-multi_precision-skip_nonfinite": dict(_MOMENTUM, **_MP_SKIP),
    }, {"rosenbrock": dict(learning_rate=0.001, clip_gradient=50.0, steps=20000),
        "rosenbrock-low": dict(learning_rate=0.002, clip_gradient=50.0, steps=20000)}),
    "signum": ({
        # No momentum-0 (signSGD) entry: on Rosenbrock in bfloat16 a gradient
        # that rounds to exactly 0 stops sign steps for good, masters or not, so
        # it cannot meet test_converges; tests/test_family_sgd.py covers it.
        "wd+clips+wd_lh": dict(BASE_OPTION_SETS["wd+clips"], wd_lh=0.01),
        # A schedule, so that two sign steps of opposite signs do not cancel
        # exactly (test_composes_with_multisteps_and_extra_args).
        "multipliers-schedule-multi_precision-skip_nonfinite": dict(_MULTIPLIERS_SCHEDULE,
                                                                    **_MP_SKIP),
    }, {"rosenbrock": _signum_rosenbrock(),
        "rosenbrock-low": dict(learning_rate=0.004, steps=5000)}),  # > half a bf16 ulp
    "adagrad": ({
        "wd+clips": BASE_OPTION_SETS["wd+clips"],
        "multipliers-schedule": _MULTIPLIERS_SCHEDULE,
        "multi_precision-skip_nonfinite": _MP_SKIP,
    }, {"parabola": dict(learning_rate=0.5),
        "rosenbrock": dict(learning_rate=0.1, steps=10000)}),
    "adadelta": ({
        "wd+clips": BASE_OPTION_SETS["wd+clips"],
        "multipliers": BASE_OPTION_SETS["multipliers"],
        "multi_precision-skip_nonfinite": _MP_SKIP,
    }, {"parabola": dict(steps=3000),
        # No rate to lower: scaled-down gradients make epsilon set the step size,
        # and its decay (not scaled by any rate) would hold the weights near 0.
        "rosenbrock": dict(wd=0.0, rescale_grad=1e-3, steps=100000)}),
}


def _family_entries():
    entries = []
    for opt, (option_sets, converge) in FAMILY_OPTION_SETS.items():
        lr_arg = None if opt == "adadelta" else "learning_rate"  # AdaDelta ignores it
        for name, kwargs in option_sets.items():
            kwargs = dict(kwargs) if lr_arg is None else {"learning_rate": 0.05, **kwargs}
            entries.append(Entry(f"{opt}-fused-{name}", getattr(mxopt, opt), kwargs,
                                 f"{opt}-{name}", "fused", exact_paths=True,
                                 learning_rate_arg=lr_arg, converge=converge,
                                 low_precision_state=opt not in ("adagrad", "adadelta")))
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


ENTRIES += _family_entries() + _adam_family_entries()
FUSED = [e for e in ENTRIES if e.path == "fused"]
# Families with both paths, which test_fused_and_chained_paths_agree compares.
FAMILIES = sorted({e.family for e in ENTRIES if e.path == "chain"})


# LARS and LAMB: fused only. Both take layer-wise normalised steps (LARS's
# eta * ||w|| / ||g||, LAMB's ||w|| / ||u||) whose size does not shrink near a
# minimum, so the convergence problems decay the rate.
def _decaying(lr, steps):
    return optax.cosine_decay_schedule(lr, steps, alpha=0.01)


LARS_OPTION_SETS = {
    "momentum-wd+clips": dict(_MOMENTUM, eta=0.5, **BASE_OPTION_SETS["wd+clips"]),
    "momentum-multipliers-schedule": dict(_MOMENTUM, eta=0.5, **_MULTIPLIERS_SCHEDULE),
    "momentum-multi_precision-skip_nonfinite": dict(_MOMENTUM, eta=0.5, **_MP_SKIP),
    # No momentum-0 entry: normalised steps without momentum crawl along
    # Rosenbrock's valley (err ~0.4 after 10000 steps) and cannot meet
    # test_converges; tests/test_family_lamb.py's golden runs cover momentum 0.
    "momentum-eps-multi_precision": dict(_MOMENTUM, eta=0.5, eps=1e-5, **_MP),
}
LAMB_OPTION_SETS = {
    "wd+clips": dict(BASE_OPTION_SETS["wd+clips"], beta2=0.99),
    "multipliers-schedule-bounds": dict(_MULTIPLIERS_SCHEDULE, beta2=0.99, lower_bound=0.1,
                                        upper_bound=5.0),
    "no_bias_correction-multi_precision-skip_nonfinite": dict(_MP_SKIP, beta2=0.99,
                                                              bias_correction=False),
}
_NORMALISED_CONVERGE = {"parabola": dict(learning_rate=_decaying(0.2, 300)),
                        "rosenbrock": dict(learning_rate=_decaying(0.05, 3000))}


def _lars_lamb_entries():
    entries = []
    for opt, option_sets in (("lars", LARS_OPTION_SETS), ("lamb", LAMB_OPTION_SETS)):
        for name, kwargs in option_sets.items():
            kwargs = {"learning_rate": 0.05, **kwargs}
            # Norms are reductions XLA may order differently under jit: an ulp
            # apart at times, as are LAMB's count-derived powers.
            entries.append(Entry(f"{opt}-fused-{name}", getattr(mxopt, opt), kwargs,
                                 f"{opt}-{name}", "fused", exact_paths=True, jit_exact=False,
                                 converge=_NORMALISED_CONVERGE))
    return entries


ENTRIES += _lars_lamb_entries()
# ccSGD, Test, DCASGD, SGLD, LBSGD (issue 18): fused only, a few option sets
# each. ccSGD is SGD under a deprecated name (its warning is silenced here).
# SGLD, whose state holds only the key, runs with multi_precision, so that
# its state has per-leaf entries for the state checks. LBSGD runs with
# batch_scale=1 (an update every call, as the contracts expect), so its warmup
# multiplier is 1.
# GroupAdaGrad takes 2-D weights only (MXNet asserts it), so its entries train
# matrices (Entry.matrices_only); tests/test_family_part2.py covers its refusals.

@functools.wraps(mxopt.ccsgd)  # its signature, for optax.inject_hyperparams
def _quiet_ccsgd(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mxopt.ccsgd(**kwargs)


def _sgld_converge():
    # SGLD samples exp(-loss / temperature) with temperature 1 / rescale_grad:
    # a large rescale_grad (and a rate that keeps lr * rescale_grad * curvature
    # below 2) makes its samples sit within the tolerance of the optimum.
    return {"parabola": dict(learning_rate=5e-4, rescale_grad=2000.0, clip_gradient=None,
                             wd=0.0, steps=300),
            "rosenbrock": dict(learning_rate=2e-8, rescale_grad=1e5, clip_gradient=None,
                               steps=20000)}


PART2_OPTION_SETS = {
    # family: (maker, option sets, test_converges overrides, jit_exact)
    "ccsgd": (_quiet_ccsgd, {"momentum-wd+clips": dict(_MOMENTUM, **BASE_OPTION_SETS[
        "wd+clips"])}, {"rosenbrock": dict(learning_rate=0.002, steps=20000)}, True),
    "test_optimizer": (mxopt.test_optimizer, {
        "plain": {}, "rescale-multi_precision-skip_nonfinite": dict(rescale_grad=0.5, **_MP_SKIP),
    }, {"parabola": dict(steps=5), "rosenbrock": dict(steps=2)}, True),
    # DCASGD keeps no memory of its steps (like SGD's momentum-free path): in
    # bfloat16 without master weights it stalls on Rosenbrock's flat valley,
    # so it runs with multi_precision here.
    "dcasgd": (mxopt.dcasgd, {
        "wd+clips-multi_precision": dict(BASE_OPTION_SETS["wd+clips"], **_MP),
        "multipliers-schedule-multi_precision": dict(_MULTIPLIERS_SCHEDULE, **_MP),
        "lamda-multi_precision-skip_nonfinite": dict(lamda=0.5, **_MP_SKIP),
    }, {"rosenbrock": dict(learning_rate=0.001, clip_gradient=50.0, steps=20000)}, True),
    "sgld": (mxopt.sgld, {
        "multi_precision": dict(_MP, key=jax.random.PRNGKey(2)),
        "wd+clips-multipliers-schedule-multi_precision-skip_nonfinite": dict(
            BASE_OPTION_SETS["wd+clips"], **_MULTIPLIERS_SCHEDULE, **_MP_SKIP,
            key=jax.random.PRNGKey(1)),
    }, _sgld_converge(), False),
    "lbsgd": (mxopt.lbsgd, {
        "momentum-wd+clips": dict(_MOMENTUM, **BASE_OPTION_SETS["wd+clips"]),
        # Momentum-free: master weights, as for SGD's (see above).
        "sqrt-multipliers-schedule-multi_precision": dict(_MULTIPLIERS_SCHEDULE, **_MP,
                                                          warmup_strategy="sqrt"),
        "momentum-multi_precision-skip_nonfinite": dict(_MOMENTUM, **_MP_SKIP),
    }, {"rosenbrock": dict(learning_rate=0.002, steps=20000)}, False),
    # 'lars' on its own problem settings: its multiplier |w| / |g| (clipped to
    # [0.01, 100]) turns lr * g into a normalised step lr * |w| * g / |g| that
    # does not shrink near a minimum, and only crawls (the 0.01 floor) while a
    # leaf's norm passes 0, where the parabola starts and Rosenbrock's w goes
    # from -1 to 1. Momentum carries the weights through 0 and a decaying rate
    # lets the normalised steps settle, as for LARS and LAMB; Rosenbrock's
    # narrow valley wants a smaller start and end (err < 0.015 in float32 and
    # float64, 0 in bfloat16 without masters; LARS's 3000-step decay from 0.05
    # stops 0.1 short).
    "lbsgd-lars": (mxopt.lbsgd, {
        "lars-momentum-wd+clips": dict(_MOMENTUM, warmup_strategy="lars",
                                       **BASE_OPTION_SETS["wd+clips"]),
    }, {"parabola": _NORMALISED_CONVERGE["parabola"],
        "rosenbrock": dict(learning_rate=optax.cosine_decay_schedule(0.02, 5000, alpha=0.001),
                           steps=5000)}, False),
    # GroupAdaGrad: MXNet's GroupAdaGrad takes the base options but no weight
    # decay (it asserts wd == 0 after multipliers: the multipliers set gives wd
    # and wd_mult 0 for every leaf, the checks' extra leaves too), and keeps
    # float32 history (bfloat16 params need multi_precision, its generic master
    # path). Rosenbrock's leaves are columns, one element per row: row-wise
    # AdaGrad is AdaGrad there, so it takes AdaGrad's problem settings.
    "groupadagrad": (mxopt.groupadagrad, {
        "plain": {},
        "rescale+clips-eps": dict(rescale_grad=0.5, clip_gradient=0.3, eps=1e-3),
        "multipliers-schedule": dict(wd=0.01, lr_mult={"w": 0.5}, wd_mult={"*": 0.0},
                                     **BASE_OPTION_SETS["mxnet-schedule"]),
        "multi_precision-skip_nonfinite": dict(_MP_SKIP),
    }, FAMILY_OPTION_SETS["adagrad"][1], True),
}


def _part2_entries():
    entries = []
    for family, (make, option_sets, converge, jit_exact) in PART2_OPTION_SETS.items():
        opt = family.split("-")[0]  # "lbsgd-lars": LBSGD with its own problem settings
        for name, kwargs in option_sets.items():
            kwargs = {"learning_rate": 0.05, **kwargs}
            entries.append(Entry(f"{opt}-fused-{name}", make, kwargs, f"{opt}-{name}",
                                 "fused", exact_paths=True, converge=converge,
                                 jit_exact=jit_exact,
                                 learning_rate_arg=None if opt == "test_optimizer"
                                 else "learning_rate",
                                 ascends=opt == "test_optimizer",
                                 low_precision_state=opt != "groupadagrad",
                                 matrices_only=opt == "groupadagrad"))
    return entries


ENTRIES += _part2_entries()
FUSED = [e for e in ENTRIES if e.path == "fused"]
