"""The Flax Linen, Flax NNX and Haiku examples train to >= 95% test accuracy on
scikit-learn's digits with both variants of mxopt.rmsprop, in this process, as
``python examples/<name>.py`` runs them (float32, i.e. without the x64 mode
conftest turns on for the golden tests)."""
import importlib
import os
import re

import jax
import pytest

import mxopt

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture
def example(monkeypatch):
    """Import an example module the way running it as a script finds its helpers
    (the examples folder on sys.path), with JAX in its default float32 mode."""
    monkeypatch.syspath_prepend(EXAMPLES)
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield importlib.import_module
    finally:
        jax.config.update("jax_enable_x64", x64)


PROGRESS = re.compile(
    r"^step +(\d+)/(\d+)  epoch +(\d+)/(\d+)  loss (\S+)  lr (\S+)  test acc (\S+)%", re.M)


def check_run(result, out, centered, epochs=20):
    assert result["test_accuracy"] >= 0.95, out
    lines = PROGRESS.findall(out)
    assert len(lines) == epochs  # one progress line per epoch
    steps = [int(line[0]) for line in lines]
    assert steps == sorted(steps) and steps[-1] == int(lines[-1][1])
    losses = [float(line[4]) for line in lines]
    assert losses[-1] < 0.25 * losses[0]
    lrs = [float(line[5]) for line in lines]
    assert lrs[0] > lrs[-1] > 0  # the cosine schedule, read back for printing
    variant = "centered (Graves)" if centered else "Tieleman & Hinton"
    assert f"mxopt.rmsprop {variant}: test accuracy" in out


def state_type(centered):
    return mxopt.CenteredRMSPropState if centered else mxopt.RMSPropState


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_flax_linen_train_state(example, capsys, centered):
    module = example("flax_linen_digits")
    result = module.main(["--centered"] if centered else [])
    check_run(result, capsys.readouterr().out, centered)
    state = result["state"]
    assert isinstance(state.opt_state, state_type(centered))
    assert int(state.opt_state.count) == int(state.step) == 20 * (1347 // 32)


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_flax_nnx_optimizer(example, capsys, centered):
    module = example("flax_nnx_digits")
    result = module.main(["--centered"] if centered else [])
    check_run(result, capsys.readouterr().out, centered)
    optimizer = result["optimizer"]
    assert type(optimizer.opt_state).__name__ == state_type(centered).__name__
    assert int(optimizer.step[...]) == 20 * (1347 // 32)


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_haiku(example, capsys, centered):
    module = example("haiku_digits")
    result = module.main(["--centered"] if centered else [])
    check_run(result, capsys.readouterr().out, centered)
    assert isinstance(result["opt_state"], state_type(centered))


def test_quiet_and_log_every(example, capsys):
    module = example("haiku_digits")
    module.main(["--epochs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "test accuracy" in out
    module.main(["--epochs", "1", "--log-every", "10"])
    out = capsys.readouterr().out
    assert [int(s) for s in re.findall(r"^step +(\d+)/", out, re.M)] == [10, 20, 30, 40, 42]
