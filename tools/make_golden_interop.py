"""Write the golden MXNet 1.9.1 checkpoints that tests/test_interop.py reads.

Runs only in the side venv (MXNet is never a dependency of mxopt):

    ../mxref/bin/python tools/make_golden_interop.py

It imports ``mxopt/_mxformat.py`` by path (that module needs only NumPy, so it
runs here, with NumPy 1.23 and without JAX) and checks, with real MXNet, that:

* mxopt's reader returns exactly what ``mx.nd.load`` returns for every file here;
* mxopt's ``.params`` writer produces byte-for-byte what ``mx.nd.save`` writes
  (format v2, and v3 under numpy-shape semantics), so MXNet loads it;
* a ``.states`` file mxopt writes (from the states it read, and from a fresh
  optimizer record built by ``_mxformat.rmsprop_optimizer``) loads with
  ``Trainer.load_states`` and continues bit-identically to the uninterrupted run;
* ``rmsprop_optimizer`` reproduces the ``__dict__`` of MXNet's own optimizer.

The tests then only have to show that mxopt's JAX side turns those same states into
``mxopt.rmsprop`` state (and back into the same bytes), without MXNet.

Deterministic: fixed seeds; rerunning rewrites tests/golden/interop/ identically.
"""
import copy
import importlib.util
import json
import os
import pickle
import sys
import tempfile

import numpy as np

try:
    import mxnet as mx
    from mxnet import autograd, gluon
    from mxnet.gluon import nn
except ImportError:  # pragma: no cover - only ever run in the side venv
    sys.exit("tools/make_golden_interop.py needs MXNet 1.9.1: run it with ../mxref/bin/python")

assert mx.__version__ == "1.9.1", mx.__version__

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
OUT = os.path.normpath(os.path.join(ROOT, "tests", "golden", "interop"))


def _load_mxformat():
    path = os.path.join(ROOT, "mxopt", "_mxformat.py")
    spec = importlib.util.spec_from_file_location("mxopt_mxformat", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


F = _load_mxformat()

STEPS_BEFORE = 5    # steps trained before the checkpoint
STEPS_AFTER = 15    # steps recorded after it
BATCH = 5

# name -> optimizer settings, Gluon parameter lr_mult, network dtype.
CONFIGS = {
    "plain": dict(opt=dict(learning_rate=0.01, gamma1=0.9, epsilon=1e-8, centered=False,
                           wd=0.001, clip_gradient=0.5, rescale_grad=2.0),
                  lr_mult={}, dtype="float32"),
    "centered_lr_mult": dict(opt=dict(learning_rate=0.005, gamma1=0.95, gamma2=0.8,
                                      epsilon=1e-6, centered=True, wd=0.01,
                                      rescale_grad=1.0, clip_weights=0.5),
                             lr_mult={"2.weight": 0.5}, dtype="float32"),
    "factor_scheduler": dict(opt=dict(centered=True, learning_rate=0.02, gamma1=0.9,
                                      gamma2=0.9, epsilon=1e-8, wd=0.0, clip_gradient=1.0,
                                      rescale_grad=1.0),
                             scheduler=dict(step=3, factor=0.7, stop_factor_lr=1e-8),
                             lr_mult={}, dtype="float32"),
    "float16_multi_precision": dict(opt=dict(learning_rate=0.01, centered=False, wd=0.0005,
                                             multi_precision=True, rescale_grad=1.0),
                                    lr_mult={}, dtype="float16"),
}


def path(name):
    return os.path.join(OUT, name)


def check_read(fname, expected):
    """mxopt's reader returns exactly what MXNet returns."""
    with open(fname, "rb") as f:
        got = F.loads_params(f.read(), fname)
    if isinstance(expected, list):
        expected = {str(i): v for i, v in enumerate(expected)}
    assert list(got) == list(expected), (fname, list(got), list(expected))
    for k, v in expected.items():
        want = v.asnumpy()
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, (fname, k)
        assert np.array_equal(got[k], want), (fname, k)


# ------------------------------------------------------------------------------------
# .params files: dtypes, lists, numpy-shape semantics, sparse, export
# ------------------------------------------------------------------------------------

def make_dtype_files():
    rng = np.random.RandomState(7)
    arrays = {
        "float32": rng.normal(size=(2, 3)).astype("float32"),
        "float64": rng.normal(size=(4,)).astype("float64"),
        "float16": rng.normal(size=(2, 2, 2)).astype("float16"),
        "uint8": rng.randint(0, 256, size=(5,)).astype("uint8"),
        "int32": rng.randint(-2 ** 31, 2 ** 31 - 1, size=(3, 1)).astype("int32"),
        "int8": rng.randint(-128, 128, size=(6,)).astype("int8"),
        "int64": np.array([2 ** 40 + 3, -2 ** 50], dtype="int64"),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0,), dtype="float32"),
        "five_d": rng.normal(size=(1, 2, 1, 2, 1)).astype("float32"),
    }
    nd = {k: mx.nd.array(v, dtype=v.dtype) if v.size else mx.nd.empty((0,)) for k, v in
          arrays.items()}
    mx.nd.save(path("dtypes.params"), nd)
    loaded = mx.nd.load(path("dtypes.params"))
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k].asnumpy(), v), k
    check_read(path("dtypes.params"), loaded)
    # mxopt's writer produces the same bytes MXNet wrote.
    with open(path("dtypes.params"), "rb") as f:
        assert F.dumps_params(arrays) == f.read()

    lst = [arrays["float32"], arrays["int64"], arrays["float16"]]
    mx.nd.save(path("list.params"), [mx.nd.array(v, dtype=v.dtype) for v in lst])
    check_read(path("list.params"), mx.nd.load(path("list.params")))
    with open(path("list.params"), "rb") as f:
        assert F.dumps_params(lst) == f.read()

    # Numpy-shape semantics (format v3): 0-d and zero-size arrays.
    np_arrays = {"scalar": np.array(3.5, dtype="float32"),
                 "zero_rows": np.zeros((0, 3), dtype="float64"),
                 "vector": np.arange(4, dtype="int32")}
    with mx.np_shape(True):
        mx.nd.save(path("np_shape.params"),
                   {k: mx.nd.array(v, dtype=v.dtype) if v.size
                    else mx.nd.zeros(v.shape, dtype=v.dtype) for k, v in np_arrays.items()})
        loaded = mx.nd.load(path("np_shape.params"))
        check_read(path("np_shape.params"), loaded)
        with open(path("np_shape.params"), "rb") as f:
            assert F.dumps_params(np_arrays, np_shape=True) == f.read()
    # ... and MXNet refuses it outside numpy-shape semantics, as documented.
    try:
        mx.nd.load(path("np_shape.params"))
        raise AssertionError("MXNet loaded a v3 file outside numpy-shape semantics")
    except mx.MXNetError:
        pass

    # Files written by mxopt's writer (not by MXNet) load in MXNet.
    with tempfile.TemporaryDirectory() as tmp:
        mine = os.path.join(tmp, "mine.params")
        F.atomic_write(mine, F.dumps_params(arrays))
        back = mx.nd.load(mine)
        for k, v in arrays.items():
            assert back[k].dtype == v.dtype and np.array_equal(back[k].asnumpy(), v), k
        F.atomic_write(mine, F.dumps_params(np_arrays, np_shape=True))
        with mx.np_shape(True):
            back = mx.nd.load(mine)
        with mx.np_shape(True), mx.util.np_array(True):
            back_np = mx.npx.load(mine)
        for k, v in np_arrays.items():
            assert back[k].shape == v.shape and np.array_equal(back[k].asnumpy(), v), k
            assert back_np[k].shape == v.shape and np.array_equal(back_np[k].asnumpy(), v), k

    # Sparse storage: the reader must refuse these clearly.
    rsp = mx.nd.sparse.row_sparse_array((np.ones((2, 3), "float32"), [0, 2]), shape=(4, 3))
    mx.nd.save(path("row_sparse.params"), {"w": rsp})
    mx.nd.save(path("csr.params"), [mx.nd.sparse.csr_matrix(np.eye(3, dtype="float32"))])
    np.savez(path("params_expected.npz"), **{f"dtypes/{k}": v for k, v in arrays.items()},
             **{f"list/{i}": v for i, v in enumerate(lst)},
             **{f"np_shape/{k}": v for k, v in np_arrays.items()})


# ------------------------------------------------------------------------------------
# A small Gluon net trained with RMSProp, checkpointed mid-run
# ------------------------------------------------------------------------------------

def make_net(dtype):
    """conv + batchnorm + dense. Full names sort differently from the collect order:
    net_conv_weight, net_conv_bias, net_bn_gamma, ... vs sorted net_bn_beta, ..."""
    net = nn.HybridSequential(prefix="net_")
    with net.name_scope():
        if dtype == "float16":
            # MXNet's CPU kernels lack float16 backward passes; a dense stack whose
            # gradients train_step supplies.
            net.add(nn.Dense(6, in_units=8, prefix="hidden_"),
                    nn.Dense(4, in_units=6, prefix="fc_"))
        else:
            net.add(nn.Conv2D(channels=3, kernel_size=3, in_channels=2, prefix="conv_"),
                    nn.BatchNorm(in_channels=3, prefix="bn_"),
                    nn.Dense(4, in_units=3 * 4 * 4, prefix="fc_"))
    net.initialize(mx.init.Xavier(rnd_type="gaussian", magnitude=2.0))
    if dtype == "float16":
        net.cast("float16")
    return net


def make_data(dtype, steps):
    rng = np.random.RandomState(1234)
    shape = (BATCH, 8) if dtype == "float16" else (BATCH, 2, 6, 6)
    return [(rng.normal(size=shape).astype(dtype), rng.normal(size=(BATCH, 4)).astype(dtype))
            for _ in range(steps)]


def make_trainer(net, cfg):
    kwargs = dict(cfg["opt"])
    if "scheduler" in cfg:
        kwargs["lr_scheduler"] = mx.lr_scheduler.FactorScheduler(
            base_lr=kwargs["learning_rate"], **cfg["scheduler"])
    for structural, mult in cfg["lr_mult"].items():
        net._collect_params_with_prefix()[structural].lr_mult = mult
    return gluon.Trainer(net.collect_params(), "rmsprop", kwargs, kvstore=None)


def train_step(net, trainer, x, y):
    trainable = {k: p for k, p in net._collect_params_with_prefix().items()
                 if p.grad_req != "null"}
    if x.dtype == np.float16:
        # MXNet's CPU FullyConnected has no float16 backward: feed the trainer
        # deterministic float16 gradients instead (it is the optimizer under test).
        rng = np.random.RandomState(int(abs(float(x.sum())) * 1000) % 2 ** 31)
        for p in trainable.values():
            grad = p.grad()
            grad[:] = rng.normal(0, 2, size=grad.shape).astype("float16")
            p.data()._fresh_grad = True
    else:
        with autograd.record():
            loss = ((net(mx.nd.array(x)) - mx.nd.array(y)) ** 2).sum()
        loss.backward()
    grads = {k: p.grad().asnumpy().copy() for k, p in trainable.items()}
    trainer.step(BATCH)
    return grads


def weights(net):
    return {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}


def optimizer_dict(opt):
    d = copy.deepcopy(opt.__getstate__())  # a snapshot: the counts keep moving
    if d.get("lr_scheduler") is not None:
        d["lr_scheduler"] = (type(d["lr_scheduler"]).__module__ + "." +
                             type(d["lr_scheduler"]).__name__, dict(d["lr_scheduler"].__dict__))
    return d


def record_dict(rec):
    d = dict(rec.fields)
    if d.get("lr_scheduler") is not None:
        d["lr_scheduler"] = (d["lr_scheduler"].cls, dict(d["lr_scheduler"].fields))
    return d


def continue_from(name, cfg, states_file, data, want):
    """Load the checkpoint into a fresh net and trainer, continue, compare bit for bit."""
    net = make_net(cfg["dtype"])
    net.load_parameters(path(f"{name}.params"))
    trainer = make_trainer(net, cfg)
    trainer.load_states(states_file)
    for x, y in data:
        train_step(net, trainer, x, y)
    got = weights(net)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), (name, states_file, k)


def make_run(name, cfg):
    mx.random.seed(42)
    np.random.seed(42)
    net = make_net(cfg["dtype"])
    trainer = make_trainer(net, cfg)
    data = make_data(cfg["dtype"], STEPS_BEFORE + STEPS_AFTER)
    for x, y in data[:STEPS_BEFORE]:
        train_step(net, trainer, x, y)
    net.save_parameters(path(f"{name}.params"))
    trainer.save_states(path(f"{name}.states"))
    mx_optimizer_at_checkpoint = optimizer_dict(trainer._optimizer)
    states_only = trainer._updaters[0].get_states(dump_optimizer=False)

    grads, after, lrs = [], [], []
    for x, y in data[STEPS_BEFORE:]:
        # The learning rate this step uses: MXNet increments num_update, then asks the
        # scheduler (asking first with the same number changes nothing).
        lrs.append(trainer._optimizer.learning_rate if "scheduler" not in cfg else
                   trainer._optimizer.lr_scheduler(trainer._optimizer.num_update + 1))
        grads.append(train_step(net, trainer, x, y))
        after.append(weights(net))
    final_states = trainer._updaters[0].states
    full_names = list(net.collect_params().keys())
    structural = list(net._collect_params_with_prefix().keys())
    check_read(path(f"{name}.params"), mx.nd.load(path(f"{name}.params")))

    # 1. The states mxopt reads, written back by mxopt, continue bit-identically.
    with open(path(f"{name}.states"), "rb") as f:
        loaded = F.loads_states(f.read(), f"{name}.states")
    F.atomic_write(path(f"{name}.mxopt.states"), F.dumps_states(loaded))
    continue_from(name, cfg, path(f"{name}.mxopt.states"), data[STEPS_BEFORE:], after[-1])

    # 2. A fresh optimizer record (what mxopt exports for a run it started) equals
    #    MXNet's optimizer __dict__ and continues bit-identically too.
    opt = dict(cfg["opt"])
    counts = dict(loaded.optimizer["_index_update_count"])
    fresh = F.rmsprop_optimizer(
        learning_rate=opt["learning_rate"], gamma1=opt.get("gamma1", 0.9),
        gamma2=opt.get("gamma2", 0.9), epsilon=opt.get("epsilon", 1e-8),
        centered=opt["centered"], clip_weights=opt.get("clip_weights"), wd=opt["wd"],
        rescale_grad=opt["rescale_grad"] / BATCH, clip_gradient=opt.get("clip_gradient"),
        multi_precision=opt.get("multi_precision", False),
        lr_scheduler=loaded.optimizer["lr_scheduler"], index_update_counts=counts)
    assert record_dict(fresh) == mx_optimizer_at_checkpoint, (
        name, record_dict(fresh), mx_optimizer_at_checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        fresh_file = os.path.join(tmp, "fresh.states")
        F.atomic_write(fresh_file, F.dumps_states(F.MXNetStates(loaded.states, fresh)))
        continue_from(name, cfg, fresh_file, data[STEPS_BEFORE:], after[-1])

    # 3. The states-only form (dump_optimizer=False) reads the same arrays.
    with open(path(f"{name}.nooptim.states"), "wb") as f:
        f.write(states_only)
    only = F.loads_states(states_only, "states_only")
    assert only.optimizer is None and list(only.states) == list(loaded.states)

    arrays = {}
    for s, g in enumerate(grads):
        for k, v in g.items():
            arrays[f"grad/{s}/{k}"] = v
    for k, v in after[-1].items():
        arrays[f"final/{k}"] = v
    for idx, state in final_states.items():
        if cfg["opt"].get("multi_precision") and isinstance(state, tuple) and len(state) == 2 \
                and isinstance(state[1], tuple):
            arrays[f"final_state/{idx}/master"] = state[0].asnumpy()
            state = state[1]
        for j, s in enumerate(state):
            arrays[f"final_state/{idx}/{j}"] = s.asnumpy()
    meta = dict(config=cfg, steps_before=STEPS_BEFORE, steps_after=STEPS_AFTER, batch=BATCH,
                full_names=full_names, structural_names=structural,
                final_num_update=trainer._optimizer.num_update, learning_rates=lrs)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path(f"{name}.npz"), **arrays)
    return net


def make_export(net):
    """HybridBlock.export: arg:/aux: keys with full names, in collect order."""
    net.hybridize()
    net(mx.nd.ones((1, 2, 6, 6)))
    with tempfile.TemporaryDirectory() as tmp:
        net.export(os.path.join(tmp, "net"), epoch=0)
        with open(os.path.join(tmp, "net-0000.params"), "rb") as f:
            data = f.read()
    with open(path("export-0000.params"), "wb") as f:
        f.write(data)
    loaded = mx.nd.load(path("export-0000.params"))
    check_read(path("export-0000.params"), loaded)
    names = [k.split(":", 1)[1] for k in loaded]
    assert names == list(net.collect_params().keys()), names


def make_special_states():
    """A states pickle with NumPy-scalar hyperparameters (NumPy 1.23 pickles), and one
    written under numpy-shape semantics (format v3 inside, plus mx.np.ndarray)."""
    opt = mx.optimizer.RMSProp(learning_rate=np.float32(0.01), gamma1=np.float64(0.95),
                               centered=np.bool_(True), clip_weights=np.float32(2.0))
    updater = mx.optimizer.get_updater(opt)
    w = mx.nd.array(np.linspace(-1, 1, 6).reshape(2, 3).astype("float32"))
    g = mx.nd.array(np.linspace(1, -2, 6).reshape(2, 3).astype("float32"))
    updater(0, g, w)
    with open(path("numpy_scalars.states"), "wb") as f:
        f.write(updater.get_states(dump_optimizer=True))
    back = F.loads_states(updater.get_states(dump_optimizer=True), "numpy_scalars")
    assert back.optimizer["lr"] == np.float32(0.01) and back.optimizer["lr"].dtype == np.float32

    with mx.np_shape(True), mx.util.np_array(True):
        updater = mx.optimizer.get_updater(mx.optimizer.RMSProp(learning_rate=0.01))
        w = mx.np.array(np.ones((3,), "float32"))
        updater(0, mx.np.array(np.full((3,), 0.5, "float32")), w)
        states = dict(updater.states)
        states[1] = mx.np.array(np.arange(3, dtype="float32"))  # a pickled mx.np.ndarray
        states[2] = (mx.nd.array(np.float32(1.5).reshape(())),)   # a 0-d NDArray (v3)
        data = pickle.dumps((states, updater.optimizer))
    with open(path("np_shape.states"), "wb") as f:
        f.write(data)
    back = F.loads_states(data, "np_shape.states")
    assert back.states[1].tolist() == [0.0, 1.0, 2.0] and back.states[2][0].shape == ()
    with mx.np_shape(True), mx.util.np_array(True):
        mx.optimizer.get_updater(mx.optimizer.SGD()).set_states(data)


def main():
    os.makedirs(OUT, exist_ok=True)
    make_dtype_files()
    nets = {name: make_run(name, cfg) for name, cfg in CONFIGS.items()}
    make_export(nets["plain"])
    make_special_states()
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files to {OUT} ({total / 1024:.0f} KiB); all MXNet "
          f"cross-checks passed")


if __name__ == "__main__":
    main()
