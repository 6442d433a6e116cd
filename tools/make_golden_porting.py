"""Write the MXNet run that notebooks/port_gluon_sgd.ipynb reproduces in Flax.

A small Gluon training script: a 64-32-10 MLP (float32) on scikit-learn's digits,
``Trainer`` with SGD + momentum + weight decay, a ``FactorScheduler`` and two
``lr_mult`` settings, fixed initial weights (drawn with NumPy) and a fixed batch
order. Runs only in the side venv (MXNet is never a dependency of mxopt):

    ../mxref/bin/python tools/make_golden_porting.py --digits-csv PATH/digits.csv.gz

The side venv has no scikit-learn, so the script reads the file that
``sklearn.datasets.load_digits`` reads (``sklearn/datasets/data/digits.csv.gz``);
without ``--digits-csv`` it looks for it in ``.venv`` next to this repository.
It writes tests/golden/porting/:

* ``mlp_init.params``: the initial weights, written by ``net.save_parameters``;
* ``sgd_factor_lr_mult.npz``: per-step mean losses and learning rates, the batch
  order, the final weights (``final/<structural name>``) and a JSON ``meta`` with
  the settings and a checksum of the data, so the notebook can check that it
  trains on the same numbers.

Deterministic: fixed seeds, one thread; rerunning rewrites the files identically.
"""
import argparse
import glob
import hashlib
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")  # deterministic float32 reductions

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _mxref  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
OUT = os.path.join(_mxref.GOLDEN_DIR, "porting")

SEED = 0
BATCH = 64
EPOCHS = 4
SETTINGS = dict(learning_rate=0.1, momentum=0.9, wd=1e-4)
SCHEDULER = dict(step=28, factor=0.5, base_lr=0.1)  # halve the rate every epoch (28 steps)
LR_MULT = {"0.bias": 2.0, "1.bias": 2.0, "1.weight": 0.5}  # structural name -> lr_mult


def load_digits_csv(path):
    """sklearn's ``load_digits(return_X_y=True)``, scaled to [0, 1] float32."""
    data = np.loadtxt(path, delimiter=",")
    x = (data[:, :-1] / 16.0).astype(np.float32)
    return x, data[:, -1].astype(np.int32)


def data_checksum(x, y):
    return hashlib.sha256(x.tobytes() + y.astype("<i4").tobytes()).hexdigest()


def batch_order(num_examples, epoch, seed=SEED):
    """Each epoch's own permutation (NumPy's PCG64, the same in every NumPy
    version); the incomplete last batch is dropped."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    per_epoch = num_examples // BATCH
    return order[:per_epoch * BATCH].reshape(per_epoch, BATCH)


def initial_weights(seed=SEED):
    """Glorot-uniform weights and small biases, (out, in) as MXNet stores them."""
    rng = np.random.RandomState(seed)
    out = {}
    for i, (n_in, n_out) in enumerate([(64, 32), (32, 10)]):
        bound = np.sqrt(6.0 / (n_in + n_out))
        out[f"{i}.weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
        out[f"{i}.bias"] = rng.uniform(-0.05, 0.05, n_out).astype(np.float32)
    return out


def train(mx, x, y, params_path):
    """The Gluon script itself (the notebook shows it)."""
    from mxnet import autograd, gluon
    from mxnet.gluon import nn

    net = nn.Sequential()
    net.add(nn.Dense(32, activation="relu", in_units=64), nn.Dense(10, in_units=32))
    net.initialize()
    params = {f"{i}.{k}": getattr(net[i], k) for i in range(2) for k in ("weight", "bias")}
    for name, value in initial_weights().items():
        params[name].set_data(mx.nd.array(value, dtype="float32"))
    net.save_parameters(params_path)
    net.collect_params(".*bias").setattr("lr_mult", 2.0)
    net[1].weight.lr_mult = 0.5
    assert {k: p.lr_mult for k, p in params.items() if p.lr_mult != 1} == LR_MULT

    scheduler = mx.lr_scheduler.FactorScheduler(**SCHEDULER)
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            dict(SETTINGS, lr_scheduler=scheduler))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    losses, rates, orders = [], [], []
    for epoch in range(EPOCHS):
        order = batch_order(len(x), epoch)
        orders.append(order)
        for idx in order:
            data, label = mx.nd.array(x[idx]), mx.nd.array(y[idx])
            with autograd.record():
                loss = loss_fn(net(data), label)
            loss.backward()
            trainer.step(BATCH)               # rescale_grad = 1 / BATCH
            losses.append(loss.mean().asscalar())
            rates.append(trainer.learning_rate)
    final = {f"final/{k}": v.data().asnumpy() for k, v in params.items()}
    return (np.array(losses, np.float32), np.array(rates, np.float64),
            np.stack(orders).astype(np.int32), final)


def find_digits_csv():
    hits = sorted(glob.glob(os.path.join(
        ROOT, ".venv", "lib", "python*", "site-packages", "sklearn", "datasets", "data",
        "digits.csv.gz")))
    if not hits:
        sys.exit("digits.csv.gz not found: pass --digits-csv "
                 "<site-packages>/sklearn/datasets/data/digits.csv.gz")
    return hits[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits-csv", help="sklearn/datasets/data/digits.csv.gz")
    args = parser.parse_args(argv)
    mx = _mxref.import_mxnet()
    mx.random.seed(SEED)
    x, y = load_digits_csv(args.digits_csv or find_digits_csv())
    os.makedirs(OUT, exist_ok=True)
    params_path = os.path.join(OUT, "mlp_init.params")
    losses, rates, orders, final = train(mx, x, y, params_path)
    print(f"wrote the initial weights to {params_path}")
    meta = dict(seed=SEED, batch_size=BATCH, epochs=EPOCHS, settings=SETTINGS,
                scheduler=SCHEDULER, lr_mult=LR_MULT, data_sha256=data_checksum(x, y),
                num_examples=len(x), mxnet=mx.__version__)
    _mxref.save_golden(os.path.join("porting", "sgd_factor_lr_mult.npz"),
                       dict(losses=losses, learning_rates=rates, batch_order=orders, **final),
                       meta, f"{len(losses)} steps of MXNet SGD")
    print("losses:", losses[0], "->", losses[-1], "| rates:", sorted(set(rates.tolist())))


if __name__ == "__main__":
    main()
