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
FUSED = [e for e in ENTRIES if e.path == "fused"]
FAMILIES = sorted({e.family for e in ENTRIES})
