"""Golden MXNet 1.9.1 RMSProp runs with named parameters, multipliers, every LR
scheduler (with warmup) and begin_num_update.

    ../mxref/bin/python tools/make_golden_semantics.py

Writes tests/golden/rmsprop_semantics.npz, replayed by tests/test_semantics.py
through ``mxopt.rmsprop(..., lr_mult=..., wd_mult=..., learning_rate=<mxopt
scheduler>, begin_num_update=...)``. Deterministic (fixed seeds).
"""

import numpy as np

from _mxref import import_mxnet, save_golden

mx = import_mxnet()

STEPS = 60
NAMES = ("fc1_weight", "fc1_bias", "bn_gamma", "bn_beta", "fc2_weight")
SHAPES = ((5, 4), (4,), (4,), (4,), (4, 3))
LR_MULT = {"fc1_weight": 0.5, "bn_beta": 2.0}
WD_MULT = {"fc1_bias": 0.3}  # on top of MXNet's default: no decay unless _weight/_gamma

SCHEDULERS = [
    ("FactorScheduler", dict(step=9, factor=0.7, stop_factor_lr=1e-3, base_lr=0.03,
                             warmup_steps=5, warmup_begin_lr=0.001, warmup_mode="linear")),
    ("MultiFactorScheduler", dict(step=[8, 20, 33], factor=0.5, base_lr=0.02, warmup_steps=4,
                                  warmup_begin_lr=0.005, warmup_mode="constant")),
    ("PolyScheduler", dict(max_update=50, base_lr=0.04, pwr=2, final_lr=0.001,
                           warmup_steps=6, warmup_begin_lr=0.0, warmup_mode="linear")),
    ("CosineScheduler", dict(max_update=45, base_lr=0.03, final_lr=0.002, warmup_steps=3,
                             warmup_begin_lr=0.01, warmup_mode="linear")),
]


def main():
    rng = np.random.RandomState(11)
    arrays = {}
    for i, shape in enumerate(SHAPES):
        arrays[f"p{i}_w0"] = rng.normal(0, 0.5, size=shape).astype(np.float32)
        arrays[f"p{i}_grads"] = (rng.normal(size=(STEPS,) + shape) * 10.0 ** rng.uniform(
            -2, 1, size=(STEPS,) + shape)).astype(np.float32)
    scenarios = []
    for s, ((cls, sched_kwargs), centered, begin) in enumerate(
            [(sch, c, b) for sch in SCHEDULERS for c, b in ((False, 0), (True, 7))]):
        sched = getattr(mx.lr_scheduler, cls)(**sched_kwargs)
        # learning_rate=base_lr: MXNet overwrites the scheduler's base_lr with the
        # optimizer's learning_rate (0.001 for RMSProp) when they differ.
        opt = mx.optimizer.RMSProp(
            learning_rate=sched_kwargs["base_lr"], lr_scheduler=sched, centered=centered,
            wd=0.02, rescale_grad=0.5, clip_gradient=2.0, begin_num_update=begin,
            param_idx2name=dict(enumerate(NAMES)))
        opt.set_lr_mult(LR_MULT)
        opt.set_wd_mult(WD_MULT)
        updater = mx.optimizer.get_updater(opt)
        weights = [mx.nd.array(arrays[f"p{i}_w0"]) for i in range(len(NAMES))]
        for step in range(STEPS):
            for i in range(len(NAMES)):
                updater(i, mx.nd.array(arrays[f"p{i}_grads"][step]), weights[i])
        for i in range(len(NAMES)):
            arrays[f"s{s}_p{i}_weight"] = weights[i].asnumpy()
        scenarios.append(dict(scheduler=cls, scheduler_kwargs=sched_kwargs, centered=centered,
                              begin_num_update=begin, num_update=opt.num_update,
                              wd=0.02, rescale_grad=0.5, clip_gradient=2.0))
    meta = dict(mxnet=mx.__version__, steps=STEPS, names=NAMES, lr_mult=LR_MULT,
                wd_mult=WD_MULT, scenarios=scenarios)
    save_golden("rmsprop_semantics.npz", arrays, meta, f"{len(scenarios)} scenarios")


if __name__ == "__main__":
    main()
