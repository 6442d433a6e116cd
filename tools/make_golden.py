"""Write golden RMSProp trajectories computed by real MXNet 1.9.1.

Runs only in the side venv (MXNet is never a dependency of mxopt):

    python3 -m venv ../mxref
    ../mxref/bin/pip install numpy==1.23.5 mxnet==1.9.1
    ../mxref/bin/python tools/make_golden.py

Deterministic: fixed seeds, so rerunning reproduces tests/golden/ bit for bit.
The file holds the shared inputs (initial weights, gradient sequences) once and,
per configuration, the weights after selected steps and the final states.
"""
import itertools

import numpy as np

from _mxref import import_mxnet, save_golden

mx = import_mxnet()

STEPS = 60
RECORD_STEPS = (1, 2, 3, 10, 30, 60)
SHAPES = ((3, 4, 5), (17,), (1,), (2, 3))


def make_inputs(dtype):
    """Initial weights and gradient sequences, one per shape."""
    rng = np.random.RandomState(20260101)
    inputs = []
    for shape in SHAPES:
        w0 = rng.normal(0.0, 0.5, size=shape)
        # Gradient magnitudes spread over four decades so clip_gradient bites on
        # some elements and not others; a few exact zeros exercise epsilon.
        mag = 10.0 ** rng.uniform(-3, 1, size=(STEPS,) + shape)
        grads = rng.normal(size=(STEPS,) + shape) * mag
        grads[rng.uniform(size=grads.shape) < 0.03] = 0.0
        inputs.append((w0.astype(dtype), grads.astype(dtype)))
    return inputs


def grid():
    base = dict(gamma1=0.9, gamma2=0.9, epsilon=1e-8)
    for centered, lr, wd, rg, cg, cw in itertools.product(
            (False, True), (0.001, 0.05), (0.0, 0.05), (1.0, 0.14),
            (None, 0.0, 0.4), (None, 0.2)):
        yield dict(base, dtype="float32", centered=centered, learning_rate=lr, wd=wd,
                   rescale_grad=rg, clip_gradient=cg, clip_weights=cw)
    extras = [
        dict(gamma1=0.95, gamma2=0.8, epsilon=1e-6),
        dict(gamma1=0.5, gamma2=0.9, epsilon=1e-3),
        dict(gamma1=0.0, gamma2=0.0, epsilon=1e-8),
        dict(gamma1=0.99, gamma2=0.5, epsilon=0.0),
    ]
    for centered, extra in itertools.product((False, True), extras):
        yield dict(extra, dtype="float32", centered=centered, learning_rate=0.02, wd=0.07,
                   rescale_grad=2.5, clip_gradient=2.0, clip_weights=0.3)
    for centered in (False, True):
        yield dict(gamma1=0.9, gamma2=0.9, epsilon=1e-8, dtype="float64", centered=centered,
                   learning_rate=0.05, wd=0.05, rescale_grad=0.14, clip_gradient=0.4,
                   clip_weights=0.2)
    # Hyperparameters whose str() MXNet's dmlc::stof parses to a float32 an ulp
    # away from float32(value) (4.7e-05, 3.3e-05, 1/48): the kernels must round
    # them MXNet's way, not Python's.
    for centered in (False, True):
        yield dict(gamma1=0.9, gamma2=0.9, epsilon=1e-8, dtype="float32", centered=centered,
                   learning_rate=4.7e-05, wd=3.3e-05, rescale_grad=1 / 48, clip_gradient=None,
                   clip_weights=None)


def run(cfg, inputs):
    opt = mx.optimizer.RMSProp(
        learning_rate=cfg["learning_rate"], gamma1=cfg["gamma1"], gamma2=cfg["gamma2"],
        epsilon=cfg["epsilon"], centered=cfg["centered"], clip_weights=cfg["clip_weights"],
        wd=cfg["wd"], rescale_grad=cfg["rescale_grad"], clip_gradient=cfg["clip_gradient"])
    out = {}
    for i, (w0, grads) in enumerate(inputs):
        weight = mx.nd.array(w0, dtype=w0.dtype)
        state = opt.create_state(i, weight)
        # MXNet creates the state as float32 zeros; a float64 run needs float64 state.
        state = tuple(s.astype(w0.dtype) for s in state)
        for step in range(1, STEPS + 1):
            opt.update(i, weight, mx.nd.array(grads[step - 1], dtype=w0.dtype), state)
            if step in RECORD_STEPS:
                out[f"p{i}_weight_step{step}"] = weight.asnumpy()
        for name, s in zip(("n", "g_avg", "delta"), state):
            out[f"p{i}_{name}"] = s.asnumpy()
    return out


def main():
    arrays = {}
    inputs = {dt: make_inputs(dt) for dt in ("float32", "float64")}
    for dt, per_shape in inputs.items():
        for i, (w0, grads) in enumerate(per_shape):
            arrays[f"{dt}_p{i}_w0"] = w0
            arrays[f"{dt}_p{i}_grads"] = grads
    configs = list(grid())
    for c, cfg in enumerate(configs):
        for key, value in run(cfg, inputs[cfg["dtype"]]).items():
            arrays[f"c{c}_{key}"] = value
    meta = dict(mxnet=mx.__version__, numpy=np.__version__, steps=STEPS,
                record_steps=RECORD_STEPS, shapes=SHAPES, configs=configs)
    save_golden("rmsprop_core.npz", arrays, meta, f"{len(configs)} configurations")


if __name__ == "__main__":
    main()
