"""Orbax: checkpoint a Flax ``TrainState`` (params and mxopt optimizer state) while
training, get interrupted, resume in a new process, and end bit for bit where an
uninterrupted run ends.

    python examples/checkpoint_resume.py --ckpt-dir /tmp/mxopt-ckpt --stop-at 110
    python examples/checkpoint_resume.py --ckpt-dir /tmp/mxopt-ckpt   # resumes at step 100

Needs ``pip install 'mxopt[flax,orbax,examples]'``. An
``orbax.checkpoint.CheckpointManager`` writes a checkpoint every ``--save-every``
steps and at the end; ``--stop-at`` simulates a crash (the process just stops,
without a final save). Run again with
the same ``--ckpt-dir`` and training resumes from the latest checkpoint: the
steps after it are redone on the same minibatches (``digits_data.batch_at``
derives each from the step number), so the final weights and optimizer state
are identical to an uninterrupted run's.

``--variant``: ``plain`` (Tieleman & Hinton), ``centered`` (Graves), or
``injected``: ``optax.inject_hyperparams(mxopt.rmsprop, static_args=("centered",))``
with the training loop lowering the learning rate in the optimizer state at
every epoch, MXNet ``Trainer.set_learning_rate`` style. The injected learning
rate lives in the state, so it is checkpointed and restored with it;
``multi_precision``: bfloat16 params with float32 master weights in the state.

Ctrl-C (SIGINT) stops training cleanly: the step under way ends, the checkpoint
being written is finished, the manager is closed, and one line says which step a
rerun resumes from (exit status 130). A second Ctrl-C stops at once.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import sys
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

import mxopt

import digits_data

VARIANTS = ("plain", "centered", "injected", "multi_precision")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(digits_data.NUM_CLASSES)(x)


def make_optimizer(variant: str, lr: float) -> optax.GradientTransformation:
    if variant == "plain":
        return mxopt.rmsprop(lr, wd=1e-4)
    if variant == "centered":
        return mxopt.rmsprop(lr, centered=True, wd=1e-4)
    if variant == "injected":
        return optax.inject_hyperparams(mxopt.rmsprop, static_args=("centered",))(
            learning_rate=lr, centered=True, wd=1e-4)
    if variant == "multi_precision":  # bfloat16 params, float32 master weights
        return mxopt.rmsprop(lr, centered=True, wd=1e-4, multi_precision=True)
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


class Interrupted(Exception):
    """Training stopped on SIGINT; ``step`` was the last step done, ``latest`` the
    latest checkpoint, which a rerun resumes from."""

    def __init__(self, step: int, latest: int | None):
        super().__init__(step, latest)
        self.step, self.latest = step, latest


@contextlib.contextmanager
def sigint_as_flag():
    """While active, the first SIGINT sets the returned event instead of raising
    KeyboardInterrupt in the middle of a step or of a checkpoint write; a second
    one raises as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach the main thread only
        return

    def handler(signum, frame):
        signal.signal(signal.SIGINT, previous)
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def train(ckpt_dir: str, variant: str = "centered", epochs: int = 5, stop_at: int | None = None,
          save_every: int = 25, lr: float = 2e-3, lr_decay: float = 0.7, batch_size: int = 32,
          seed: int = 0, quiet: bool = False) -> train_state.TrainState:
    """Train (resuming from ``ckpt_dir`` if it holds a checkpoint) until ``epochs``
    are done or ``stop_at`` steps; returns the last TrainState. Raises
    :class:`Interrupted` after a clean stop on SIGINT."""
    with sigint_as_flag() as stop:
        return _train(stop, ckpt_dir, variant, epochs, stop_at, save_every, lr, lr_decay,
                      batch_size, seed, quiet)


def _train(stop, ckpt_dir, variant, epochs, stop_at, save_every, lr, lr_decay, batch_size,
           seed, quiet):
    say = (lambda *a: None) if quiet else print
    data = digits_data.load_digits(seed=seed)
    per_epoch = digits_data.steps_per_epoch(len(data.x_train), batch_size)
    total = epochs * per_epoch

    model = MLP()
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), data.x_train[:1])["params"]
    if variant == "multi_precision":
        params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                          tx=make_optimizer(variant, lr))

    manager = ocp.CheckpointManager(
        os.path.abspath(ckpt_dir),
        # cleanup_tmp_directories: a save cut short by a hard kill leaves a temporary
        # directory, removed when the next run opens the manager.
        options=ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=2,
                                             cleanup_tmp_directories=True))
    start = manager.latest_step()
    if start is not None:
        # The freshly built state is the target: it gives the tree structure
        # (mxopt's NamedTuple states, inject_hyperparams' dicts), dtypes and shapes.
        state = manager.restore(start, args=ocp.args.StandardRestore(state))
        say(f"resumed from step {start} in {ckpt_dir}")
    start = start or 0

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def predict(params, x):
        return model.apply({"params": params}, x)

    def current_lr(state):
        if variant == "injected":
            return state.opt_state.hyperparams["learning_rate"]
        return lr

    progress = digits_data.Progress(total, per_epoch, lambda _: current_lr(state),
                                    quiet=quiet)
    for step in range(start, total):
        if variant == "injected" and step and step % per_epoch == 0:
            # Lower the learning rate in the optimizer state (no recompilation).
            hyper = dict(state.opt_state.hyperparams)
            hyper["learning_rate"] = hyper["learning_rate"] * lr_decay
            state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
        x, y = digits_data.batch_at(data.x_train, data.y_train, step, batch_size, seed)
        state, loss = train_step(state, x, y)
        progress.step(step + 1, loss)
        manager.save(step + 1, args=ocp.args.StandardSave(state))  # every save_every steps
        if stop.is_set():
            manager.wait_until_finished()  # the checkpoint being written, if any
            manager.close()
            raise Interrupted(step + 1, manager.latest_step())
        if stop_at is not None and step + 1 == stop_at:
            say(f"stopping at step {stop_at} (simulated interruption); the latest "
                f"checkpoint is step {manager.latest_step()}")
            break
        if (step + 1) % per_epoch == 0:
            acc = digits_data.accuracy(predict(state.params, data.x_test), data.y_test)
            progress.report(step + 1, test_acc=f"{acc:.1%}")
    else:  # finished: keep the final state too, whatever the save interval
        if total and manager.latest_step() != total:
            manager.save(total, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()
    manager.close()
    return state


def fingerprint(state: train_state.TrainState) -> str:
    """SHA-256 of the bytes of every params and optimizer-state leaf: equal
    fingerprints mean bit-identical states."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
        leaf = np.asarray(leaf)
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()[:16]


def main(argv=None) -> train_state.TrainState:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="centered")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop after this many steps, without a final save")
    parser.add_argument("--save-every", type=int, default=25)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        state = train(args.ckpt_dir, args.variant, args.epochs, args.stop_at, args.save_every,
                      quiet=args.quiet)
    except Interrupted as e:
        resume = f"step {e.latest}" if e.latest is not None else "the start (no checkpoint yet)"
        print(f"interrupted after step {e.step}: run the same command again to resume from "
              f"{resume}", flush=True)
        sys.exit(130)
    print(f"{args.variant}: step {int(state.step)}, fingerprint of params and optimizer "
          f"state {fingerprint(state)}")
    return state


if __name__ == "__main__":
    main()
