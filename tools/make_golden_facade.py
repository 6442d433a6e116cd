"""Golden runs of MXNet 1.9.1's optimizer class API (Updater + RMSProp).

    ../mxref/bin/python tools/make_golden_facade.py

Writes tests/golden/rmsprop_facade.npz: scenarios driven through
``mx.optimizer.get_updater``, with named parameters, ``param_idx2name``,
``set_lr_mult``/``set_wd_mult``, ``set_learning_rate`` mid-run, ``param_dict``,
Symbol attributes, a FactorScheduler with ``begin_num_update`` and float16
``multi_precision``. Each scenario is described in JSON ("events" at given
steps) so that the test replays it through mxopt. Deterministic (fixed seeds).
"""

import numpy as np

from _mxref import import_mxnet, save_golden

mx = import_mxnet()

STEPS = 60
NAMES = ("fc1_weight", "fc1_bias", "bn_gamma", "bn_beta")
SHAPES = ((4, 3), (3,), (3,), (3,))


class Mults:
    """Stands in for a Gluon Parameter in param_dict."""
    def __init__(self, lr_mult, wd_mult):
        self.lr_mult, self.wd_mult = lr_mult, wd_mult


SCENARIOS = [
    dict(name="idx2name_plain", kwargs=dict(learning_rate=0.01, wd=0.02, rescale_grad=0.5,
                                            clip_gradient=1.0, clip_weights=0.8),
         idx2name=True, events={"20": {"set_learning_rate": 0.004},
                                "40": {"set_lr_mult": {"fc1_bias": 2.0, "0": 0.5}}}),
    dict(name="idx2name_centered", kwargs=dict(learning_rate=0.01, wd=0.02, centered=True,
                                               rescale_grad=0.5, clip_gradient=1.0),
         idx2name=True, events={"10": {"set_wd_mult": {"fc1_weight": 0.0, "bn_beta": 1.5}},
                                "30": {"set_learning_rate": 0.02}}),
    dict(name="param_dict", kwargs=dict(learning_rate=0.02, wd=0.05, centered=True,
                                        clip_weights=0.5),
         idx2name=True, param_dict={"0": [0.5, 2.0], "3": [3.0, 0.0]}, events={}),
    dict(name="sym_attrs", kwargs=dict(learning_rate=0.02, wd=0.05, gamma1=0.8),
         idx2name=True, sym={"fc1_weight": {"lr_mult": 2.0, "wd_mult": 0.5},
                             "bn_beta": {"lr_mult": 0.1}}, events={}),
    dict(name="scheduler_begin", kwargs=dict(wd=0.01, centered=True, begin_num_update=5),
         idx2name=False, scheduler=dict(step=7, factor=0.5, base_lr=0.05,
                                        stop_factor_lr=1e-3), events={}),
    dict(name="float16_mp", kwargs=dict(learning_rate=0.01, wd=0.01, multi_precision=True,
                                        clip_gradient=2.0),
         idx2name=True, dtype="float16", events={"25": {"set_learning_rate": 0.003}}),
]


def build(scenario):
    kwargs = dict(scenario["kwargs"])
    if scenario.get("idx2name"):
        kwargs["param_idx2name"] = dict(enumerate(NAMES))
    if "param_dict" in scenario:
        kwargs["param_dict"] = {int(k): Mults(*v) for k, v in scenario["param_dict"].items()}
    if "sym" in scenario:
        variables = [mx.sym.Variable(n, **scenario["sym"].get(n, {})) for n in NAMES]
        sym = mx.sym.Group(variables)
        kwargs["sym"] = sym
        scenario["sym_attr_dict"] = sym.attr_dict()
    if "scheduler" in scenario:
        kwargs["lr_scheduler"] = mx.lr_scheduler.FactorScheduler(**scenario["scheduler"])
    return mx.optimizer.RMSProp(**kwargs)


def main():
    rng = np.random.RandomState(7)
    arrays = {}
    for i, shape in enumerate(SHAPES):
        arrays[f"p{i}_w0"] = rng.normal(0, 0.5, size=shape).astype(np.float32)
        arrays[f"p{i}_grads"] = (rng.normal(size=(STEPS,) + shape) * 10.0 ** rng.uniform(
            -2, 1, size=(STEPS,) + shape)).astype(np.float32)
    for s, scenario in enumerate(SCENARIOS):
        dtype = np.dtype(scenario.get("dtype", "float32"))
        opt = build(scenario)
        updater = mx.optimizer.get_updater(opt)
        weights = [mx.nd.array(arrays[f"p{i}_w0"], dtype=dtype) for i in range(len(NAMES))]
        for step in range(1, STEPS + 1):
            for key, value in scenario["events"].get(str(step), {}).items():
                if key == "set_learning_rate":
                    opt.set_learning_rate(value)
                else:  # set_lr_mult / set_wd_mult: keys that are digits are indices
                    getattr(opt, key)({int(k) if k.isdigit() else k: m for k, m in value.items()})
            for i in range(len(NAMES)):
                grad = mx.nd.array(arrays[f"p{i}_grads"][step - 1], dtype=dtype)
                updater(i, grad, weights[i])
        for i in range(len(NAMES)):
            arrays[f"s{s}_p{i}_weight"] = weights[i].asnumpy()
        scenario["num_update"] = opt.num_update
        scenario["learning_rate"] = opt.learning_rate
    meta = dict(mxnet=mx.__version__, steps=STEPS, names=NAMES, scenarios=SCENARIOS)
    save_golden("rmsprop_facade.npz", arrays, meta, f"{len(SCENARIOS)} scenarios")


if __name__ == "__main__":
    main()
