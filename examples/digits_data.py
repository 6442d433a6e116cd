"""Shared by the examples and the quick-start notebook: scikit-learn's digits data
set (it ships inside scikit-learn, nothing is downloaded), split, batched, and a
progress printer.

Not an example itself; the scripts next to it import it (running
``python examples/<name>.py`` puts this folder on ``sys.path``).
"""
from __future__ import annotations

import time
from typing import Callable, Iterator, NamedTuple, Optional, Union

import numpy as np

NUM_FEATURES = 64
NUM_CLASSES = 10


class Digits(NamedTuple):
    """8x8 digit images flattened to 64 float32 features in [0, 1], int32 labels."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """The 1797 digits, split into stratified train and test sets (1347 / 450 with
    the defaults). The same ``seed`` gives the same split everywhere."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel intensities are 0..16
    y = y.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed)
    return Digits(x_train, y_train, x_test, y_test)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the incomplete last batch is dropped, so every step
    has the same shape and compiles once)."""
    return num_examples // batch_size


def batch_at(x: np.ndarray, y: np.ndarray, step: int, batch_size: int,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The minibatch of global step ``step`` (from 0): each epoch visits the data
    in its own random order, a function of ``(seed, epoch)`` only, so a run
    resumed at any step sees the same batches as an uninterrupted one."""
    per_epoch = steps_per_epoch(len(x), batch_size)
    epoch, i = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(x))
    idx = order[i * batch_size:(i + 1) * batch_size]
    return x[idx], y[idx]


def batches(x: np.ndarray, y: np.ndarray, epoch: int, batch_size: int,
            seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The minibatches of one epoch, in the order :func:`batch_at` gives them."""
    per_epoch = steps_per_epoch(len(x), batch_size)
    for i in range(per_epoch):
        yield batch_at(x, y, epoch * per_epoch + i, batch_size, seed)


class Progress:
    """Progress lines the way training scripts print them: the step, the epoch, the
    mean training loss since the previous line, the learning rate of the last
    step and anything else passed, e.g.::

        step  84/840  epoch  2/20  loss 0.4163  lr 0.000977  test acc 87.6%  (3203 steps/s)

    :meth:`step` records a step's loss and prints a line every ``every`` steps
    (0: never); :meth:`report` prints one now (e.g. at the end of an epoch, with
    the test accuracy). ``learning_rate`` is a number or an optax schedule, called
    as mxopt calls it: with the number of updates done before the step.
    ``quiet=True`` prints nothing.
    """

    def __init__(self, total_steps: int, steps_per_epoch: int,
                 learning_rate: Union[float, Callable], every: int = 0, quiet: bool = False,
                 print_fn: Callable[[str], None] = print):
        self.total, self.per_epoch = total_steps, steps_per_epoch
        self.learning_rate, self.every, self.quiet = learning_rate, every, quiet
        self.print = print_fn
        self.lines: list[str] = []
        self._losses: list = []
        self._t0 = time.perf_counter()
        self._n0 = 0

    def step(self, step: int, loss) -> Optional[str]:
        """Record the loss of step ``step`` (from 1). ``loss`` may be a JAX scalar: it
        is read (which waits for the device) only when a line is printed."""
        self._losses.append(loss)
        if self.every and step % self.every == 0:
            return self.report(step)
        return None

    def report(self, step: int, **extra) -> Optional[str]:
        """Print a line for step ``step`` now; ``extra`` values are printed as given,
        with their names' underscores as spaces."""
        if self.quiet:
            return None
        lr = self.learning_rate
        lr = lr(step - 1) if callable(lr) else lr
        losses = [float(v) for v in self._losses]
        rate = (step - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
        epochs = -(-self.total // self.per_epoch)
        parts = [f"step {step:{len(str(self.total))}d}/{self.total}",
                 f"epoch {-(-step // self.per_epoch):{len(str(epochs))}d}/{epochs}",
                 f"loss {np.mean(losses):.4f}" if losses else "loss -",
                 f"lr {float(lr):.3g}"]
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in extra.items()]
        line = "  ".join(parts) + f"  ({rate:.0f} steps/s)"
        self.print(line)
        self.lines.append(line)
        self._losses, self._t0, self._n0 = [], time.perf_counter(), step
        return line


def accuracy(logits, labels) -> float:
    """Fraction of rows whose largest logit is the label."""
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == np.asarray(labels)))


def parse_example_args(description, argv=None):
    """The command line shared by the digits training examples; ``description`` (the
    script's docstring) is shown as written."""
    import argparse

    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--centered", action="store_true",
                        help="Graves' centered RMSProp instead of Tieleman & Hinton's")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=0,
                        help="also print a progress line every N steps")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    return parser.parse_args(argv)
