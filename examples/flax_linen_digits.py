"""Flax Linen: train an MLP on scikit-learn's digits with a ``TrainState`` and
``mxopt.rmsprop``.

    python examples/flax_linen_digits.py [--centered] [--epochs 20] [--log-every N] [--quiet]

Needs ``pip install 'mxopt[flax,examples]'``. Prints a progress line (step, loss,
learning rate, test accuracy) after every epoch, and every ``--log-every`` steps
if given; exits non-zero if the final test accuracy is below 95%.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import optax
from flax.training import train_state

import mxopt

import digits_data


class MLP(nn.Module):
    hidden: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(digits_data.NUM_CLASSES)(x)


def parse_args(argv=None):
    return digits_data.parse_example_args(__doc__, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = digits_data.load_digits(seed=args.seed)
    per_epoch = digits_data.steps_per_epoch(len(data.x_train), args.batch_size)
    total = args.epochs * per_epoch

    # Any optax schedule works as mxopt's learning rate; it is called with the
    # number of updates done so far (the TrainState's step before the update).
    schedule = optax.cosine_decay_schedule(args.lr, total, alpha=0.1)
    tx = mxopt.rmsprop(schedule, centered=args.centered, wd=1e-4)

    model = MLP()
    params = model.init(jax.random.PRNGKey(args.seed), data.x_train[:1])["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        # TrainState.apply_gradients passes the params to tx.update, as mxopt needs.
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def predict(params, x):
        return model.apply({"params": params}, x)

    progress = digits_data.Progress(total, per_epoch, schedule, every=args.log_every,
                                    quiet=args.quiet)
    step, acc = 0, 0.0
    for epoch in range(args.epochs):
        for x, y in digits_data.batches(data.x_train, data.y_train, epoch, args.batch_size,
                                        seed=args.seed):
            state, loss = train_step(state, x, y)
            step += 1
            progress.step(step, loss)
        acc = digits_data.accuracy(predict(state.params, data.x_test), data.y_test)
        progress.report(step, test_acc=f"{acc:.1%}")

    variant = "centered (Graves)" if args.centered else "Tieleman & Hinton"
    print(f"Flax Linen, mxopt.rmsprop {variant}: test accuracy {acc:.2%}")
    return {"test_accuracy": acc, "state": state}


if __name__ == "__main__":
    if main()["test_accuracy"] < 0.95:
        raise SystemExit("test accuracy below 95%")
