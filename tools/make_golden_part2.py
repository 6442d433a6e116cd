"""Golden trajectories of MXNet 1.9.1's ccSGD, Test, DCASGD, SGLD, GroupAdaGrad and
LBSGD (issue 18), from real MXNet.

    ../mxref/bin/python tools/make_golden_part2.py

Writes tests/golden/family/<optimizer>.npz for ccsgd, test, dcasgd, sgld,
groupadagrad and lbsgd, in the layout of tools/make_golden_family.py (see
tests/golden/family/README.md): 30 steps of ``mx.optimizer.get_updater``, one
index per call in sorted index order, three named float32 parameters (a 4-D
convolution kernel, its bias and a dense matrix), a grid over wd, rescale_grad,
clip_gradient None/0/bound, a FactorScheduler with warmup, begin_num_update,
lr_mult/wd_mult through ``param_idx2name``, the optimizer's own options and
float16 with multi_precision. Configurations MXNet refuses are kept with the error.

Two optimizers need more:

* GroupAdaGrad takes 2-D weights only, so its runs use three named matrices; its
  refusals of the usual 4-D kernel and of ``wd > 0`` are recorded.
* SGLD is random. MXNet draws its noise from ``mx.random`` (``normal(0,
  sqrt(lr))``); this script wraps that function to record every draw (seeded, so
  reruns are identical), and stores the draws as ``c{c}_p{i}_noise``. The
  deterministic half-step can then be checked bit for bit: MXNet's weight is
  ``(w - lr/2 * (g + wd * w)) + noise`` with the recorded noise.

Deterministic: fixed seeds; rerunning reproduces the files byte for byte.

Held-out runs (not committed): ``--heldout SEED --out DIR`` writes the same files
to DIR/family from other inputs and other noise, with every configuration's
numbers (rates, decays, bounds, own hyperparameters, schedules,
``begin_num_update``, LBSGD's epochs) drawn around the grid's from SEED, keeping
each configuration's meaning (a 0 stays 0); the tests read them instead of the
committed files when MXOPT_FAMILY_GOLDEN=DIR:

    ../mxref/bin/python tools/make_golden_part2.py --heldout 7 --out /tmp/heldout7
    MXOPT_FAMILY_GOLDEN=/tmp/heldout7 python -m pytest tests/test_family_part2.py
"""
import argparse
import json
import os

import numpy as np

from _mxref import held_out, import_mxnet, make_updater, save_golden

mx = import_mxnet()
import mxnet.optimizer.optimizer as mx_optimizer_module  # noqa: E402
from mxnet.optimizer import contrib as _contrib  # noqa: E402,F401  (registers groupadagrad)

STEPS = 30
SHAPES = ((3, 2, 2, 2), (3,), (4, 5))
NAMES = ("conv0_weight", "conv0_bias", "fc1_weight")
MATRIX_SHAPES = ((6, 4), (3, 5), (4, 5))          # GroupAdaGrad: 2-D weights only
MATRIX_NAMES = ("emb0_weight", "fc0_bias", "fc1_weight")

LR_MULT = [["fc1_weight", 0.5], [1, 3.0]]  # a name key and an index key
WD_MULT = [["fc1_weight", 2.0]]            # index 1 gets 0 from param_idx2name's rule

# Learning rate and the state buffers' names (mxopt's field names, MXNet's order,
# None entries of MXNet's state left out).
OPTIMIZERS = {
    "ccsgd": 0.1,
    "test": 0.1,
    "dcasgd": 0.1,
    "sgld": 0.01,
    "groupadagrad": 0.1,
    "lbsgd": 0.1,
}


def make_inputs(shapes, dtype, seed):
    """Initial weights and the gradients fed at each step, one pair per shape."""
    rng = np.random.RandomState(seed)
    inputs = []
    for shape in shapes:
        w0 = rng.normal(0.0, 0.5, size=shape)
        mag = 10.0 ** rng.uniform(-2, 1, size=(STEPS,) + shape)
        grads = rng.normal(size=(STEPS,) + shape) * mag
        zeros = rng.uniform(size=grads.shape) < 0.1
        zeros[0] = False
        grads[zeros] = 0.0
        inputs.append((w0.astype(dtype), grads.astype(dtype)))
    return inputs


def config(name, kwargs, *, scheduler=None, names=False, lr_mult=None, wd_mult=None,
           shapes=None):
    dtype = "float16" if kwargs.get("multi_precision") else "float32"
    cfg = dict(name=name, kwargs=kwargs, scheduler=scheduler, idx2name=names,
               lr_mult=lr_mult or [], wd_mult=wd_mult or [], dtype=dtype)
    if shapes:
        cfg["shapes"] = shapes
    return cfg


def base_grid(lr, own, extra=None, *, wd=0.05):
    """The options every optimizer is run with; ``extra`` is merged into each."""
    extra = extra or {}
    decay_clip = dict(wd=wd, rescale_grad=0.5, clip_gradient=0.8)
    yield config("plain", dict(learning_rate=lr, **extra))
    yield config("wd_rescale_clip", dict(learning_rate=lr, **decay_clip, **extra))
    yield config("clip0", dict(learning_rate=lr, wd=wd, rescale_grad=2.0, clip_gradient=0.0,
                               **extra))
    yield config("warmup_factor", dict(wd=wd / 2.5, **extra),
                 scheduler=dict(step=2, factor=0.5, base_lr=2 * lr, warmup_steps=3,
                                warmup_begin_lr=lr / 4))
    yield config("resume", dict(begin_num_update=4, rescale_grad=0.5, wd=wd / 2.5, **extra),
                 scheduler=dict(step=3, factor=0.7, base_lr=lr))
    yield config("names", dict(learning_rate=lr, wd=wd, clip_gradient=1.5, **extra),
                 names=True, lr_mult=LR_MULT, wd_mult=WD_MULT)
    yield config("own", dict(learning_rate=lr, wd=wd / 5, rescale_grad=1.5, clip_gradient=2.0,
                             **dict(extra, **own)))
    yield config("mp", dict(learning_rate=lr, multi_precision=True, **decay_clip, **extra))


def grid(opt):
    lr = OPTIMIZERS[opt]
    if opt == "ccsgd":
        yield from base_grid(lr, dict(momentum=0.5), dict(momentum=0.9))
        yield config("mom0_wd_rescale_clip", dict(learning_rate=lr, wd=0.05, rescale_grad=0.5,
                                                  clip_gradient=0.8, momentum=0.0))
        yield config("mom0_mp", dict(learning_rate=lr, multi_precision=True, wd=0.05,
                                     rescale_grad=0.5, clip_gradient=0.8))
    elif opt == "test":
        yield from base_grid(lr, {})
    elif opt == "dcasgd":
        yield from base_grid(lr, dict(lamda=0.5))
        # MXNet 1.9.1 raises for any momentum != 0 (`if mom:` on an NDArray).
        yield config("momentum", dict(learning_rate=lr, momentum=0.9))
    elif opt == "sgld":
        yield from base_grid(lr, {})
    elif opt == "groupadagrad":
        for cfg in base_grid(lr, dict(eps=1e-3), wd=0.0):
            cfg["shapes"] = "matrix"
            yield cfg
        # MXNet asserts wd == 0 after multipliers, and 2-D weights.
        yield config("wd_positive", dict(learning_rate=lr, wd=0.05), shapes="matrix")
        yield config("conv_kernel", dict(learning_rate=lr))
    elif opt == "lbsgd":
        mom = dict(momentum=0.9)
        accum = dict(momentum=0.9, batch_scale=3, warmup_epochs=2, updates_per_epoch=4)
        yield from base_grid(lr, dict(accum, warmup_strategy="power2", begin_epoch=1), accum)
        yield config("bs1", dict(learning_rate=lr, wd=0.05, **mom))
        yield config("mom0_accum", dict(learning_rate=lr, wd=0.05, rescale_grad=0.5,
                                        clip_gradient=0.8, batch_scale=2, warmup_epochs=1,
                                        updates_per_epoch=8))
        yield config("sqrt", dict(learning_rate=lr, wd=0.05, warmup_strategy="sqrt", **accum))
        yield config("lars", dict(learning_rate=lr, wd=0.05, rescale_grad=0.5,
                                  clip_gradient=0.8, warmup_strategy="lars", **accum))
        yield config("lars_mom0", dict(learning_rate=lr, wd=0.05, warmup_strategy="lars",
                                       batch_scale=2))
        yield config("unknown_strategy", dict(learning_rate=lr, warmup_strategy="none",
                                              **accum))
        # The rate is read before counting: a scheduler that changes every step shows it.
        yield config("read_before_count", dict(wd=0.02, batch_scale=2, **mom),
                     scheduler=dict(step=1, factor=0.9, base_lr=lr, warmup_steps=4,
                                    warmup_begin_lr=lr / 4))
        yield config("mp_mom0", dict(learning_rate=lr, multi_precision=True, wd=0.05,
                                     batch_scale=2))


def as_buffers(opt, state):
    """The non-None state buffers of one (inner) state, in MXNet's order."""
    if state is None:
        return ()
    if isinstance(state, (tuple, list)):
        return tuple(s for s in state if s is not None)
    return (state,)


STATE_NAMES = {
    "ccsgd": ("mom",), "test": ("weight_copy",), "dcasgd": ("weight_previous",),
    "sgld": (), "groupadagrad": ("history",), "lbsgd": ("mom",),
}


NOISE_SEED = 20261202


class NoiseRecorder:
    """Wraps ``mx.random.normal`` as SGLD calls it, keeping every draw."""

    def __init__(self):
        self.draws = []
        self.real = mx_optimizer_module.normal

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        self.draws.append(out.asnumpy())
        return out


def run(opt, cfg, inputs, names):
    optimizer, updater = make_updater(mx, opt, cfg, names)
    dtype = cfg["dtype"]
    mp = bool(cfg["kwargs"].get("multi_precision"))
    fused_mp = opt == "ccsgd"  # SGD's fused kernels: (inner, master)
    weights = [mx.nd.array(w0, dtype=dtype) for w0, _ in inputs]
    record = {}
    recorder = NoiseRecorder()
    mx_optimizer_module.normal = recorder
    mx.random.seed(NOISE_SEED)
    try:
        for step in range(STEPS):
            for i, (_, grads) in enumerate(inputs):
                before = len(recorder.draws)
                updater(i, mx.nd.array(grads[step], dtype=dtype), weights[i])
                if opt == "sgld":
                    assert len(recorder.draws) == before + 1
                    record.setdefault(f"p{i}_noise", []).append(recorder.draws[-1])
            for i, w in enumerate(weights):
                state = updater.states[i]
                master = None
                if mp:
                    inner, master = state if fused_mp else state[::-1]
                    state = inner
                arrays = [("weight", w)] + list(zip(cfg["state_names"], as_buffers(opt, state)))
                if master is not None:
                    arrays.append(("master", master))
                for key, value in arrays:
                    record.setdefault(f"p{i}_{key}", []).append(
                        value if isinstance(value, np.ndarray) else value.asnumpy())
    finally:
        mx_optimizer_module.normal = recorder.real
    out = {key: np.stack(values) for key, values in record.items()}
    if opt == "lbsgd":
        out["num_update"] = np.array([optimizer.num_update], np.int64)
    if opt == "test":
        out["num_update"] = np.array([optimizer.num_update], np.int64)
    return out






def save(name, arrays, meta, what, root):
    if root is None:
        save_golden(name, arrays, meta, what)
        return
    path = os.path.join(root, name)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    print(f"wrote {what} to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=int, default=None,
                        help="draw inputs and every configuration's numbers from this seed")
    parser.add_argument("--out", default=None, help="directory for a held-out run's files")
    args = parser.parse_args()
    if (args.heldout is None) != (args.out is None):
        parser.error("--heldout and --out go together")
    base = 0 if args.heldout is None else 1000 * args.heldout + 17
    rng = np.random.RandomState(20261130 + base)
    if args.heldout is not None:
        os.makedirs(os.path.join(args.out, "family"), exist_ok=True)
        global NOISE_SEED
        NOISE_SEED += base
    inputs = {
        (None, "float32"): make_inputs(SHAPES, np.float32, 20261130 + base),
        (None, "float16"): make_inputs(SHAPES, np.float16, 20261131 + base),
        ("matrix", "float32"): make_inputs(MATRIX_SHAPES, np.float32, 20261203 + base),
        ("matrix", "float16"): make_inputs(MATRIX_SHAPES, np.float16, 20261204 + base),
    }
    for opt in OPTIMIZERS:
        arrays = {}
        for (shapes, dtype), per_param in inputs.items():
            prefix = dtype if shapes is None else f"{shapes}_{dtype}"
            for i, (w0, grads) in enumerate(per_param):
                arrays[f"{prefix}_p{i}_w0"] = w0
                arrays[f"{prefix}_p{i}_grads"] = grads
        configs = []
        for c, cfg in enumerate(grid(opt)):
            if args.heldout is not None:
                cfg = held_out(cfg, rng)
            shapes = cfg.get("shapes")
            names = MATRIX_NAMES if shapes == "matrix" else NAMES
            has_momentum = cfg["kwargs"].get("momentum", 0.0)
            cfg["state_names"] = list(STATE_NAMES[opt]) if (
                opt not in ("ccsgd", "lbsgd") or has_momentum) else []
            cfg["names"] = list(names)
            try:
                result = run(opt, cfg, inputs[(shapes, cfg["dtype"])], names)
            except Exception as err:  # MXNet's own refusal is part of the record
                cfg["raises"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}" \
                    if str(err).strip() else type(err).__name__
                cfg["state_names"] = []
                result = {}
            for key, value in result.items():
                arrays[f"c{c}_{key}"] = value
            configs.append(cfg)
        meta = dict(mxnet=mx.__version__, numpy=np.__version__, optimizer=opt, steps=STEPS,
                    shapes=SHAPES, names=NAMES, matrix_shapes=MATRIX_SHAPES,
                    matrix_names=MATRIX_NAMES, configs=configs)
        save(f"family/{opt}.npz", arrays, meta, f"{len(configs)} {opt} configurations",
             args.out)


if __name__ == "__main__":
    main()
