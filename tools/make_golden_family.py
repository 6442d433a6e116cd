"""Golden trajectories of ten MXNet 1.9.1 optimizers (issue 17), from real MXNet.

    ../mxref/bin/python tools/make_golden_family.py

Writes tests/golden/family/<optimizer>.npz for sgd, nag, signum, adam, adagrad,
adadelta, adamax, nadam, ftrl and ftml. Each runs a small grid of options through
``mx.optimizer.get_updater``, in the spirit of MXNet's own test_optimizer.py:
three named float32 parameters of distinct shapes (a 4-D convolution kernel, its
bias and a dense matrix), updated one index at a time in sorted index order for
STEPS steps, so per-index counts, ``begin_num_update``, Nadam's shared
``m_schedule`` and name-based multipliers all matter. The inputs (initial weights
and the gradients fed) are stored once per file; per configuration the weights and
every state buffer after each step. A configuration for which MXNet raises is kept
in the metadata with the error and no arrays. tests/golden/family/README.md
describes the layout.

Deterministic: fixed seeds; rerunning reproduces the files byte for byte.

Held-out runs (not committed): ``--heldout SEED --out DIR`` writes the same
files to DIR from other inputs and with every configuration's numbers (rates,
decays, bounds, own hyperparameters, schedules, ``begin_num_update``) drawn
around the grid's from SEED, keeping each configuration's meaning (a clip of 0
stays 0, a momentum of 0 stays 0). The tests then run over them unchanged:

    ../mxref/bin/python tools/make_golden_family.py --heldout 7 --out /tmp/heldout7
    MXOPT_FAMILY_GOLDEN=/tmp/heldout7 python -m pytest tests/test_family_sgd.py \
        tests/test_family_adam.py tests/test_reference_family.py
"""
import argparse
import os

import numpy as np

from _mxref import held_out, import_mxnet, make_updater, save_golden

mx = import_mxnet()

STEPS = 30
SHAPES = ((3, 2, 2, 2), (3,), (4, 5))
NAMES = ("conv0_weight", "conv0_bias", "fc1_weight")

# Learning rate, own hyperparameters at non-default values, and the names of the
# state buffers (in MXNet's order), per optimizer.
OPTIMIZERS = {
    "sgd": (0.1, dict(momentum=0.5, lazy_update=False), ("mom",)),
    "nag": (0.1, dict(momentum=0.5), ("mom",)),
    "signum": (0.01, dict(momentum=0.7, wd_lh=0.05), ("mom",)),
    "adam": (0.01, dict(beta1=0.8, beta2=0.99, epsilon=1e-6), ("mean", "var")),
    "adagrad": (0.1, dict(eps=1e-4), ("history",)),
    "adadelta": (1.0, dict(rho=0.8, epsilon=1e-4), ("acc_g", "acc_delta")),
    "adamax": (0.02, dict(beta1=0.8, beta2=0.99), ("m", "u")),
    "nadam": (0.01, dict(beta1=0.8, beta2=0.99, epsilon=1e-6, schedule_decay=0.01),
              ("m", "v")),
    "ftrl": (0.1, dict(lamda1=0.05, beta=0.5), ("z", "n")),
    "ftml": (0.05, dict(beta1=0.5, beta2=0.99, epsilon=1e-6), ("d", "v", "z")),
}
MOMENTUM_OPTIMIZERS = ("sgd", "nag", "signum")
FUSED_MULTI_PRECISION = ("sgd", "nag")  # state (inner, master); the others (master, inner)

LR_MULT = [["fc1_weight", 0.5], [1, 3.0]]  # a name key and an index key
WD_MULT = [["fc1_weight", 2.0]]            # conv0_bias gets 0 from param_idx2name's rule


def make_inputs(dtype, seed):
    """Initial weights and the gradients fed at each step, one pair per shape."""
    rng = np.random.RandomState(seed)
    inputs = []
    for shape in SHAPES:
        w0 = rng.normal(0.0, 0.5, size=shape)
        # Magnitudes over three decades so clip_gradient bites on some elements only.
        mag = 10.0 ** rng.uniform(-2, 1, size=(STEPS,) + shape)
        grads = rng.normal(size=(STEPS,) + shape) * mag
        # A few exact zeros after the first step (sign(0) = 0; Adamax's u is
        # already positive there, so they do not make NaN).
        zeros = rng.uniform(size=grads.shape) < 0.1
        zeros[0] = False
        grads[zeros] = 0.0
        inputs.append((w0.astype(dtype), grads.astype(dtype)))
    return inputs


def config(name, kwargs, *, scheduler=None, names=False, lr_mult=None, wd_mult=None):
    dtype = "float16" if kwargs.get("multi_precision") else "float32"
    return dict(name=name, kwargs=kwargs, scheduler=scheduler, idx2name=names,
                lr_mult=lr_mult or [], wd_mult=wd_mult or [], dtype=dtype)


def grid(opt):
    lr, own, _ = OPTIMIZERS[opt]
    mom = dict(momentum=0.9) if opt in MOMENTUM_OPTIMIZERS else {}
    no_mom = dict(momentum=0.0)
    decay_clip = dict(wd=0.05, rescale_grad=0.5, clip_gradient=0.8)
    yield config("plain", dict(learning_rate=lr, **mom))
    yield config("wd_rescale_clip", dict(learning_rate=lr, **decay_clip, **mom))
    yield config("clip0", dict(learning_rate=lr, wd=0.05, rescale_grad=2.0, clip_gradient=0.0,
                               **mom))
    # No learning_rate: Adam, Adamax, Nadam and Signum overwrite base_lr with their
    # default rate anyway (the warmup still ramps to 2 * lr); Ftrl never does.
    yield config("warmup_factor", dict(wd=0.02, **mom),
                 scheduler=dict(step=2, factor=0.5, base_lr=2 * lr, warmup_steps=3,
                                warmup_begin_lr=lr / 4))
    yield config("resume", dict(begin_num_update=4, rescale_grad=0.5, wd=0.02, **mom),
                 scheduler=dict(step=3, factor=0.7, base_lr=lr))
    yield config("names", dict(learning_rate=lr, wd=0.05, clip_gradient=1.5, **mom),
                 names=True, lr_mult=LR_MULT, wd_mult=WD_MULT)
    yield config("own", dict(learning_rate=lr, wd=0.01, rescale_grad=1.5, clip_gradient=2.0,
                             **dict(mom, **own)))
    yield config("mp", dict(learning_rate=lr, multi_precision=True, **decay_clip, **mom))
    if opt in MOMENTUM_OPTIMIZERS:
        yield config("mom0_plain", dict(learning_rate=lr, **no_mom))
        yield config("mom0_wd_rescale_clip", dict(learning_rate=lr, **decay_clip, **no_mom))
        yield config("mom0_clip0", dict(learning_rate=lr, wd=0.05, rescale_grad=2.0,
                                        clip_gradient=0.0, **no_mom))
    if opt in FUSED_MULTI_PRECISION:
        yield config("mom0_mp", dict(learning_rate=lr, multi_precision=True, **decay_clip,
                                     **no_mom))
    if opt == "sgd":
        # An explicit learning_rate overwrites the scheduler's base_lr (with a warning).
        yield config("lr_overwrites_scheduler", dict(learning_rate=lr, momentum=0.9, wd=0.02),
                     scheduler=dict(step=2, factor=0.5, base_lr=3 * lr, warmup_steps=2,
                                    warmup_begin_lr=lr / 2))
    if opt in ("sgd", "nag", "ftrl", "ftml"):
        # Rates below 1e-4 reach the kernel as "4.7e-05", which dmlc's parser does not
        # round to float32(4.7e-05); here lr enters the state, so that is visible.
        yield config("small_lr", dict(wd=0.01, **mom),
                     scheduler=dict(step=2, factor=0.7, base_lr=4.7e-05))
    if opt == "signum":
        # signsgd_update has no wd_lh: MXNet raises.
        yield config("mom0_wd_lh", dict(learning_rate=lr, wd_lh=0.05, **no_mom))


def as_tuple(state):
    if state is None:
        return ()
    if isinstance(state, (tuple, list)):
        return tuple(state)
    return (state,)


def split_state(opt, cfg, state):
    """(master or None, inner state buffers) of one Updater state."""
    if cfg["kwargs"].get("multi_precision"):
        if opt in FUSED_MULTI_PRECISION:
            inner, master = state
        else:
            master, inner = state
        return master, as_tuple(inner)
    return None, as_tuple(state)


def run(opt, cfg, inputs):
    optimizer, updater = make_updater(mx, opt, cfg, NAMES)
    dtype = cfg["dtype"]
    weights = [mx.nd.array(w0, dtype=dtype) for w0, _ in inputs]
    record = {}
    m_schedule = []
    for step in range(STEPS):
        for i, (_, grads) in enumerate(inputs):
            updater(i, mx.nd.array(grads[step], dtype=dtype), weights[i])
            if opt == "nadam":
                m_schedule.append(optimizer.m_schedule)
        for i, w in enumerate(weights):
            master, inner = split_state(opt, cfg, updater.states[i])
            arrays = [("weight", w)] + list(zip(cfg["state_names"], inner))
            if master is not None:
                arrays.append(("master", master))
            for key, value in arrays:
                record.setdefault(f"p{i}_{key}", []).append(value.asnumpy())
    out = {key: np.stack(values) for key, values in record.items()}
    if opt == "nadam":
        out["m_schedule"] = np.array(m_schedule, dtype=np.float64)
    return out


def probe_parsing():
    """How MXNet receives Python numbers: the float32 a kernel's C++ ``float`` field
    gets (``sgd_update`` with weight 0 and gradient -1 returns ``lr``), a
    ``Tuple<float>`` entry (``multi_sgd_update``'s ``lrs``), and an NDArray scalar
    operand (``ones * x``); and C's ``powf`` (``mx.nd.power``), which FTML uses."""
    rng = np.random.RandomState(20261201)
    values = [float(v) for v in 10.0 ** rng.uniform(-9, 1, 300)]
    values += [0.05 * 0.7 ** k for k in range(20)]                     # scheduler rates
    values += [0.01 * (1 - 0.99 ** t) ** 0.5 / (1 - 0.8 ** t) for t in range(1, 21)]  # Adam
    values += [0.1, 0.9, 0.999, 1e-8, 1e-7, 1e-5, 0.004, 0.5, 2.0, 1.5, 3.0, 1, 0.0]
    zero, minus_one = mx.nd.zeros((1,)), -mx.nd.ones((1,))
    kernel, tuple_, scalar = [], [], []
    for v in values:
        kernel.append(mx.nd.sgd_update(zero, minus_one, lr=v, wd=0.0).asnumpy()[0])
        w = mx.nd.zeros((1,))
        mx.nd.multi_sgd_update(w, minus_one, out=[w], num_weights=1, lrs=[v], wds=[0.0])
        tuple_.append(w.asnumpy()[0])
        scalar.append((mx.nd.ones((1,)) * v).asnumpy()[0])
    bases = np.repeat(np.array([0.6, 0.5, 0.999, 0.99, 0.9], np.float32), 40)
    exponents = np.tile(np.arange(1, 41, dtype=np.float32), 5)
    powf = mx.nd.power(mx.nd.array(bases), mx.nd.array(exponents)).asnumpy()
    arrays = dict(values=np.array(values, np.float64), kernel_float=np.array(kernel, np.float32),
                  tuple_float=np.array(tuple_, np.float32),
                  scalar_operand=np.array(scalar, np.float32),
                  pow_base=bases, pow_exponent=exponents, powf=powf)
    save_golden("family/parsing.npz", arrays, dict(mxnet=mx.__version__), "parsing probes")


def probe_sgd_mom_kernel(inputs):
    """``sgd_mom_update`` called directly: no optimizer of the ten runs it on dense
    arrays (SGD always aggregates into multi_sgd_mom_update), but the twin exists."""
    cases = [dict(lr=4.7e-05, momentum=0.9, wd=0.05, rescale_grad=0.5, clip_gradient=0.8),
             dict(lr=0.1, momentum=0.5, wd=0.01, rescale_grad=2.0)]
    arrays = {}
    for k, kwargs in enumerate(cases):
        for i, (w0, grads) in enumerate(inputs):
            weight, mom = mx.nd.array(w0), mx.nd.zeros(w0.shape)
            weights, moms = [], []
            for g in grads:
                mx.nd.sgd_mom_update(weight, mx.nd.array(g), mom, out=weight, **kwargs)
                weights.append(weight.asnumpy())
                moms.append(mom.asnumpy())
            arrays[f"c{k}_p{i}_weight"] = np.stack(weights)
            arrays[f"c{k}_p{i}_mom"] = np.stack(moms)
    meta = dict(mxnet=mx.__version__, kernel="sgd_mom_update", cases=cases,
                inputs="float32 inputs of sgd.npz")
    save_golden("family/kernels.npz", arrays, meta, "direct sgd_mom_update calls")






def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=int, default=None,
                        help="draw inputs and every configuration's numbers from this seed")
    parser.add_argument("--out", default=None, help="directory for a held-out run's files")
    args = parser.parse_args()
    if (args.heldout is None) != (args.out is None):
        parser.error("--heldout and --out go together")
    seed = 20261130 if args.heldout is None else 1000 * args.heldout + 17
    rng = np.random.RandomState(seed)
    if args.heldout is None:
        probe_parsing()
        probe_sgd_mom_kernel(make_inputs(np.float32, seed))
    else:
        os.makedirs(os.path.join(args.out, "family"), exist_ok=True)
    inputs = {"float32": make_inputs(np.float32, seed),
              "float16": make_inputs(np.float16, seed + 1)}
    for opt in OPTIMIZERS:
        arrays = {}
        for dtype, per_param in inputs.items():
            for i, (w0, grads) in enumerate(per_param):
                arrays[f"{dtype}_p{i}_w0"] = w0
                arrays[f"{dtype}_p{i}_grads"] = grads
        configs = []
        for c, cfg in enumerate(grid(opt)):
            if args.heldout is not None:
                cfg = held_out(cfg, rng)
            has_momentum = cfg["kwargs"].get("momentum", 0.9 if opt == "signum" else 0.0)
            names = OPTIMIZERS[opt][2]
            cfg["state_names"] = list(names) if (
                opt not in MOMENTUM_OPTIMIZERS or has_momentum) else []
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
