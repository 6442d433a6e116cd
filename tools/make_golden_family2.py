"""Golden trajectories of MXNet 1.9.1's LARS and LAMB (issue 18, item 1), from real MXNet.

    ../mxref/bin/python tools/make_golden_family2.py

Writes tests/golden/family/lars.npz and lamb.npz. Each runs a grid of options
through ``mx.optimizer.get_updater`` for STEPS steps over six named parameters
(a 4-D convolution kernel and its bias, a BatchNorm gamma and beta, a dense
matrix and its bias), so that LARS's name rule (``gamma``/``beta``/``bias``
keep the rate), its chunks of four in a list call, ``param_idx2name``'s
``wd_mult`` rules and the per-tensor norms all matter. Each step is one list
call ``updater([0..5], grads, weights)``, as Gluon's Trainer makes it, except
in the configurations marked ``"call": "index"``, which call
``updater(i, grad, weight)`` one index at a time (LARS's momentum correction
then reaches only the first parameter after a rate change), and LAMB's marked
``"call": "direct"``, which call ``optimizer.update_multi_precision(i, weight,
grad, state)`` without an Updater (MXNet's single-index LAMB path). The inputs are
stored once per file; per configuration the weights and every state buffer
after each step (``master`` too under multi_precision). Same layout as
tools/make_golden_family.py (tests/golden/family/README.md).

Deterministic: fixed seeds; rerunning reproduces the files byte for byte.

Held-out runs (not committed), as tools/make_golden_family.py's: ``--heldout SEED
--out DIR`` draws other inputs and every configuration's numbers around the
grid's (LARS's ``eta`` and LAMB's bounds too), and MXOPT_FAMILY_GOLDEN=DIR points
tests/test_family_lamb.py at them:

    ../mxref/bin/python tools/make_golden_family2.py --heldout 7 --out /tmp/heldout7
    MXOPT_FAMILY_GOLDEN=/tmp/heldout7 python -m pytest tests/test_family_lamb.py
"""
import argparse
import os

import numpy as np

from _mxref import held_out, import_mxnet, make_updater, save_golden

mx = import_mxnet()

# The family script's rules, and LARS's and LAMB's own numbers.

STEPS = 30
SHAPES = ((3, 2, 2, 2), (3,), (3,), (3,), (4, 5), (4,))
NAMES = ("conv0_weight", "conv0_bias", "bn0_gamma", "bn0_beta", "fc1_weight", "fc1_bias")

LR_MULT = [["fc1_weight", 0.5], [1, 3.0], ["bn0_gamma", 2.0]]  # name keys and an index key
WD_MULT = [["fc1_weight", 2.0], ["bn0_beta", 1.0]]             # beta: 0 by the rule, then 1


def make_inputs(dtype, seed):
    """Initial weights and the gradients fed at each step, one pair per shape."""
    rng = np.random.RandomState(seed)
    inputs = []
    for k, shape in enumerate(SHAPES):
        w0 = rng.normal(0.0, 0.5, size=shape)
        mag = 10.0 ** rng.uniform(-2, 1, size=(STEPS,) + shape)
        grads = rng.normal(size=(STEPS,) + shape) * mag
        zeros = rng.uniform(size=grads.shape) < 0.1
        zeros[0] = False
        grads[zeros] = 0.0
        if k == 3:
            grads[5] = 0.0  # a whole zero gradient: LARS keeps the plain rate, LAMB's r2 = 0
        inputs.append((w0.astype(dtype), grads.astype(dtype)))
    return inputs


def config(name, kwargs, *, scheduler=None, names=False, lr_mult=None, wd_mult=None,
           call="list"):
    dtype = "float16" if kwargs.get("multi_precision") else "float32"
    return dict(name=name, kwargs=kwargs, scheduler=scheduler, idx2name=names,
                lr_mult=lr_mult or [], wd_mult=wd_mult or [], dtype=dtype, call=call)


WARMUP = dict(step=2, factor=0.5, warmup_steps=3)
DECAY_CLIP = dict(wd=0.05, rescale_grad=0.5, clip_gradient=0.8)


def lars_grid():
    lr, mom, no_mom = 0.5, dict(momentum=0.9), dict(momentum=0.0)
    eta = dict(eta=0.05)
    yield config("plain", dict(learning_rate=lr, **mom))
    yield config("wd_rescale_clip", dict(learning_rate=lr, **DECAY_CLIP, **eta, **mom))
    yield config("clip0", dict(learning_rate=lr, wd=0.05, rescale_grad=2.0, clip_gradient=0.0,
                               **eta, **mom))
    # Momentum correction: the rate changes in the warmup and at every step of 2.
    yield config("warmup_factor", dict(wd=0.02, **eta, **mom),
                 scheduler=dict(WARMUP, base_lr=2 * lr, warmup_begin_lr=lr / 4))
    yield config("warmup_factor_per_index", dict(wd=0.02, **eta, **mom),
                 scheduler=dict(WARMUP, base_lr=2 * lr, warmup_begin_lr=lr / 4), call="index")
    yield config("resume", dict(begin_num_update=4, rescale_grad=0.5, wd=0.02, **eta, **mom),
                 scheduler=dict(step=3, factor=0.7, base_lr=lr))
    yield config("names", dict(learning_rate=lr, wd=0.05, clip_gradient=1.5, **eta, **mom),
                 names=True, lr_mult=LR_MULT, wd_mult=WD_MULT)
    yield config("own", dict(wd=0.01, rescale_grad=1.5, clip_gradient=2.0, eta=0.2, eps=0.01,
                             momentum_correction=False, lazy_update=False, momentum=0.8),
                 scheduler=dict(step=2, factor=0.5, base_lr=lr))
    yield config("mp", dict(learning_rate=lr, multi_precision=True, **DECAY_CLIP, **eta, **mom))
    yield config("mp_warmup_names", dict(multi_precision=True, wd=0.02, **eta, **mom),
                 scheduler=dict(WARMUP, base_lr=2 * lr, warmup_begin_lr=lr / 4), names=True)
    yield config("mom0_plain", dict(learning_rate=lr, **no_mom))
    yield config("mom0_wd_rescale_clip_names", dict(learning_rate=lr, **DECAY_CLIP, **eta,
                                                    **no_mom), names=True)
    yield config("mom0_mp", dict(learning_rate=lr, multi_precision=True, **DECAY_CLIP, **eta,
                                 **no_mom))


def lamb_grid():
    lr = 0.01
    yield config("plain", dict(learning_rate=lr))
    yield config("wd_rescale_clip", dict(learning_rate=lr, **DECAY_CLIP))
    yield config("clip0", dict(learning_rate=lr, wd=0.05, rescale_grad=2.0, clip_gradient=0.0))
    # No learning_rate: LAMB's signature rate 0.001 overwrites base_lr (the warmup
    # still ramps to the construction-time 2 * lr).
    yield config("warmup_factor", dict(wd=0.02),
                 scheduler=dict(WARMUP, base_lr=2 * lr, warmup_begin_lr=lr / 4))
    yield config("resume", dict(learning_rate=lr, begin_num_update=4, rescale_grad=0.5,
                                wd=0.02), scheduler=dict(step=3, factor=0.7, base_lr=lr))
    yield config("names", dict(learning_rate=lr, wd=0.05, clip_gradient=1.5), names=True,
                 lr_mult=LR_MULT, wd_mult=WD_MULT)
    yield config("own", dict(learning_rate=lr, wd=0.01, rescale_grad=1.5, clip_gradient=2.0,
                             beta1=0.8, beta2=0.99, epsilon=1e-4, lower_bound=1.0,
                             upper_bound=2.0))
    yield config("no_bias_correction", dict(learning_rate=lr, wd=0.01, bias_correction=False,
                                            lower_bound=0.0, upper_bound=1.5))
    yield config("mp", dict(learning_rate=lr, multi_precision=True, **DECAY_CLIP))
    yield config("mp_own", dict(learning_rate=lr, multi_precision=True, wd=0.01, beta1=0.8,
                                beta2=0.99, lower_bound=0.5, upper_bound=1.2))
    # One index per optimizer call (LAMB.update_multi_precision(i, ...), no
    # Updater): MXNet then runs lamb_update_phase1/2 and NDArray.norm, and under
    # multi_precision writes the float16 weight but never the float32 master.
    yield config("direct", dict(learning_rate=lr, **DECAY_CLIP), call="direct")
    yield config("direct_own", dict(learning_rate=lr, wd=0.01, beta1=0.8, beta2=0.99,
                                    epsilon=1e-4, lower_bound=1.0, upper_bound=2.0),
                 scheduler=dict(step=3, factor=0.7, base_lr=lr), call="direct")
    yield config("direct_no_bias_correction", dict(learning_rate=lr, wd=0.01,
                                                   bias_correction=False, upper_bound=1.5),
                 names=True, lr_mult=LR_MULT, call="direct")
    yield config("direct_mp", dict(learning_rate=lr, multi_precision=True, **DECAY_CLIP),
                 call="direct")


GRIDS = {"lars": (lars_grid, ("mom",)), "lamb": (lamb_grid, ("mean", "var"))}


def split_state(opt, cfg, state):
    """(master or None, inner state buffers) of one Updater state."""
    def as_tuple(s):
        return () if s is None else tuple(s) if isinstance(s, (tuple, list)) else (s,)
    if cfg["kwargs"].get("multi_precision"):
        if opt == "lars":
            inner, master = state  # the fused kernels' layout
        else:
            master, inner = state
        return master, as_tuple(inner)
    return None, as_tuple(state)


def run(opt, cfg, inputs):
    optimizer, updater = make_updater(mx, opt, cfg, NAMES)
    dtype = cfg["dtype"]
    weights = [mx.nd.array(w0, dtype=dtype) for w0, _ in inputs]
    indices = list(range(len(weights)))
    record = {}
    for step in range(STEPS):
        grads = [mx.nd.array(g[step], dtype=dtype) for _, g in inputs]
        if cfg["call"] == "list":
            updater(indices, grads, weights)
        elif cfg["call"] == "index":
            for i in indices:
                updater(i, grads[i], weights[i])
        else:  # "direct": the optimizer itself, one index per call
            for i in indices:
                if i not in updater.states:
                    updater.states[i] = optimizer.create_state_multi_precision(i, weights[i])
                optimizer.update_multi_precision(i, weights[i], grads[i], updater.states[i])
        for i, w in enumerate(weights):
            master, inner = split_state(opt, cfg, updater.states[i])
            arrays = [("weight", w)] + list(zip(cfg["state_names"], inner))
            if master is not None:
                arrays.append(("master", master))
            for key, value in arrays:
                record.setdefault(f"p{i}_{key}", []).append(value.asnumpy())
    return {key: np.stack(values) for key, values in record.items()}



def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=int, default=None,
                        help="draw inputs and every configuration's numbers from this seed")
    parser.add_argument("--out", default=None, help="directory for a held-out run's files")
    args = parser.parse_args()
    if (args.heldout is None) != (args.out is None):
        parser.error("--heldout and --out go together")
    seed = 20261218 if args.heldout is None else 1000 * args.heldout + 18
    rng = np.random.RandomState(seed)
    if args.heldout is not None:
        os.makedirs(os.path.join(args.out, "family"), exist_ok=True)
    inputs = {"float32": make_inputs(np.float32, seed),
              "float16": make_inputs(np.float16, seed + 1)}
    for opt, (grid, state_names) in GRIDS.items():
        arrays = {}
        for dtype, per_param in inputs.items():
            for i, (w0, grads) in enumerate(per_param):
                arrays[f"{dtype}_p{i}_w0"] = w0
                arrays[f"{dtype}_p{i}_grads"] = grads
        configs = []
        for c, cfg in enumerate(grid()):
            if args.heldout is not None:
                cfg = held_out(cfg, rng)
            has_state = opt != "lars" or cfg["kwargs"].get("momentum", 0.0) > 0
            cfg["state_names"] = list(state_names) if has_state else []
            try:
                result = run(opt, cfg, inputs[cfg["dtype"]])
            except Exception as err:  # MXNet's own refusal is part of the record
                cfg["raises"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
                cfg["state_names"] = []
                result = {}
            for key, value in result.items():
                arrays[f"c{c}_{key}"] = value
            configs.append(cfg)
        meta = dict(mxnet=mx.__version__, numpy=np.__version__, optimizer=opt, steps=STEPS,
                    shapes=SHAPES, names=NAMES, configs=configs)
        save_golden(f"family/{opt}.npz", arrays, meta, f"{len(configs)} {opt} configurations",
                    root=args.out)


if __name__ == "__main__":
    main()
