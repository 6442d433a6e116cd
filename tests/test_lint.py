"""The repository stays ruff-clean (rules in pyproject.toml)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                           "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unexpected_mxopt_warnings_fail_the_tests():
    """pyproject's filterwarnings: a warning mxopt raises that a test neither expects
    (pytest.warns) nor filters is an error, so a clean run prints no warnings."""
    import jax.numpy as jnp
    import pytest

    import mxopt

    with pytest.raises(UserWarning, match="multi_precision"):
        mxopt.rmsprop(0.01).init({"w": jnp.ones(2, jnp.float16)})
    with pytest.warns(UserWarning, match="multi_precision"):  # expected: fine
        mxopt.rmsprop(0.01).init({"w": jnp.ones(2, jnp.float16)})
