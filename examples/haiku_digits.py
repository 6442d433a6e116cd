"""Haiku: train an MLP on scikit-learn's digits with ``mxopt.rmsprop``.

    python examples/haiku_digits.py [--centered] [--epochs 20] [--log-every N] [--quiet]

Needs ``pip install 'mxopt[haiku,examples]'``. Prints a progress line (step, loss,
learning rate, test accuracy) after every epoch, and every ``--log-every`` steps
if given; exits non-zero if the final test accuracy is below 95%.
"""
from __future__ import annotations

import haiku as hk
import jax
import optax

import mxopt

import digits_data


def forward(x):
    return hk.nets.MLP([128, digits_data.NUM_CLASSES])(x)  # ReLU between the layers


def parse_args(argv=None):
    return digits_data.parse_example_args(__doc__, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = digits_data.load_digits(seed=args.seed)
    per_epoch = digits_data.steps_per_epoch(len(data.x_train), args.batch_size)
    total = args.epochs * per_epoch

    net = hk.without_apply_rng(hk.transform(forward))
    params = net.init(jax.random.PRNGKey(args.seed), data.x_train[:1])
    schedule = optax.cosine_decay_schedule(args.lr, total, alpha=0.1)
    tx = mxopt.rmsprop(schedule, centered=args.centered, wd=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss_fn(params):
            return optax.softmax_cross_entropy_with_integer_labels(net.apply(params, x), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)  # mxopt needs the params
        return optax.apply_updates(params, updates), opt_state, loss

    predict = jax.jit(net.apply)

    progress = digits_data.Progress(total, per_epoch, schedule, every=args.log_every,
                                    quiet=args.quiet)
    step, acc = 0, 0.0
    for epoch in range(args.epochs):
        for x, y in digits_data.batches(data.x_train, data.y_train, epoch, args.batch_size,
                                        seed=args.seed):
            params, opt_state, loss = train_step(params, opt_state, x, y)
            step += 1
            progress.step(step, loss)
        acc = digits_data.accuracy(predict(params, data.x_test), data.y_test)
        progress.report(step, test_acc=f"{acc:.1%}")

    variant = "centered (Graves)" if args.centered else "Tieleman & Hinton"
    print(f"Haiku, mxopt.rmsprop {variant}: test accuracy {acc:.2%}")
    return {"test_accuracy": acc, "params": params, "opt_state": opt_state}


if __name__ == "__main__":
    if main()["test_accuracy"] < 0.95:
        raise SystemExit("test accuracy below 95%")
