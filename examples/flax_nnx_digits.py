"""Flax NNX: train an MLP on scikit-learn's digits with ``nnx.Optimizer`` and
``mxopt.rmsprop``.

    python examples/flax_nnx_digits.py [--centered] [--epochs 20] [--log-every N] [--quiet]

Needs ``pip install 'mxopt[flax,examples]'`` (Flax >= 0.11: ``nnx.Optimizer``
takes ``wrt`` and ``update(model, grads)``). Prints a progress line (step, loss,
learning rate, test accuracy) after every epoch, and every ``--log-every`` steps
if given; exits non-zero if the final test accuracy is below 95%.
"""
from __future__ import annotations

import optax
from flax import nnx

import mxopt

import digits_data


class MLP(nnx.Module):
    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(digits_data.NUM_FEATURES, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, digits_data.NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x)))


def parse_args(argv=None):
    return digits_data.parse_example_args(__doc__, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = digits_data.load_digits(seed=args.seed)
    per_epoch = digits_data.steps_per_epoch(len(data.x_train), args.batch_size)
    total = args.epochs * per_epoch

    schedule = optax.cosine_decay_schedule(args.lr, total, alpha=0.1)
    model = MLP(128, rngs=nnx.Rngs(args.seed))
    # nnx.Optimizer.update hands the params to tx.update, as mxopt needs.
    optimizer = nnx.Optimizer(model, mxopt.rmsprop(schedule, centered=args.centered, wd=1e-4),
                              wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def predict(model, x):
        return model(x)

    progress = digits_data.Progress(total, per_epoch, schedule, every=args.log_every,
                                    quiet=args.quiet)
    step, acc = 0, 0.0
    for epoch in range(args.epochs):
        for x, y in digits_data.batches(data.x_train, data.y_train, epoch, args.batch_size,
                                        seed=args.seed):
            loss = train_step(model, optimizer, x, y)
            step += 1
            progress.step(step, loss)
        acc = digits_data.accuracy(predict(model, data.x_test), data.y_test)
        progress.report(step, test_acc=f"{acc:.1%}")

    variant = "centered (Graves)" if args.centered else "Tieleman & Hinton"
    print(f"Flax NNX, mxopt.rmsprop {variant}: test accuracy {acc:.2%}")
    return {"test_accuracy": acc, "model": model, "optimizer": optimizer}


if __name__ == "__main__":
    if main()["test_accuracy"] < 0.95:
        raise SystemExit("test accuracy below 95%")
