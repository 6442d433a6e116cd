"""Golden float16 runs of MXNet 1.9.1's RMSProp with multi_precision=True.

    ../mxref/bin/python tools/make_golden_mp.py

Writes tests/golden/rmsprop_mp.npz: for each configuration, the float16 weights
and the float32 master copies after 60 steps (and after step 1), plus the final
optimizer state. Deterministic (fixed seeds).
"""
import itertools

import numpy as np

from _mxref import import_mxnet, save_golden

mx = import_mxnet()

STEPS = 60
SHAPES = ((4, 5), (9,), (1,))


def make_inputs():
    rng = np.random.RandomState(20261126)
    inputs = []
    for shape in SHAPES:
        w0 = rng.normal(0.0, 0.5, size=shape).astype(np.float16)
        mag = 10.0 ** rng.uniform(-3, 1, size=(STEPS,) + shape)
        grads = (rng.normal(size=(STEPS,) + shape) * mag).astype(np.float16)
        inputs.append((w0, grads))
    return inputs


def grid():
    for centered, lr, (wd, rg, cg, cw) in itertools.product(
            (False, True), (0.001, 0.02),
            ((0.0, 1.0, None, None), (0.05, 0.14, 0.4, 0.2), (0.01, 2.0, 1.0, None),
             (0.1, 1.0, None, 0.3))):
        yield dict(centered=centered, learning_rate=lr, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
                   wd=wd, rescale_grad=rg, clip_gradient=cg, clip_weights=cw)


def main():
    inputs = make_inputs()
    arrays = {}
    for i, (w0, grads) in enumerate(inputs):
        arrays[f"p{i}_w0"] = w0
        arrays[f"p{i}_grads"] = grads
    configs = list(grid())
    for c, cfg in enumerate(configs):
        opt = mx.optimizer.RMSProp(multi_precision=True, **cfg)
        updater = mx.optimizer.get_updater(opt)
        weights = [mx.nd.array(w0, dtype=np.float16) for w0, _ in inputs]
        for step in range(1, STEPS + 1):
            for i, (_, grads) in enumerate(inputs):
                updater(i, mx.nd.array(grads[step - 1], dtype=np.float16), weights[i])
            if step in (1, STEPS):
                for i, w in enumerate(weights):
                    arrays[f"c{c}_p{i}_weight_step{step}"] = w.asnumpy()
                    master, _ = updater.states[i]
                    arrays[f"c{c}_p{i}_master_step{step}"] = master.asnumpy()
        for i in range(len(inputs)):
            master, state = updater.states[i]
            for name, s in zip(("n", "g_avg", "delta"), state):
                arrays[f"c{c}_p{i}_{name}"] = s.asnumpy()
    meta = dict(mxnet=mx.__version__, steps=STEPS, shapes=SHAPES, configs=configs)
    save_golden("rmsprop_mp.npz", arrays, meta, f"{len(configs)} configurations")


if __name__ == "__main__":
    main()
