"""Claims of the README that the code could silently stop matching (issue 16 item 8)."""
import ast
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mxopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


README = _read("README.md")


def test_every_command_uses_the_venv_python():
    bare = [line for line in README.splitlines() if re.match(r"\s+python\s", line)]
    assert not bare, bare


def test_checkpoint_section_names_every_variant_and_state():
    source = _read("examples", "checkpoint_resume.py")
    variants = next(ast.literal_eval(node.value) for node in ast.parse(source).body
                    if isinstance(node, ast.Assign) and node.targets[0].id == "VARIANTS")
    section = README[README.index("Checkpoints: "):README.index("Notebooks (")]
    number = {3: "three", 4: "four", 5: "five"}[len(variants)]
    assert f"checks all {number} variants" in " ".join(section.split())
    for variant in variants:
        assert f"`{variant}`" in section or f"--variant {variant}`" in section, variant
    for state in ("RMSPropState", "CenteredRMSPropState", "MasterWeightsState",
                  "inject_hyperparams"):
        assert state in section, state


def test_api_table_points_to_formulas_that_exist():
    assert "formulas under Quick start" not in README


def test_inject_hyperparams_recompiles_exactly_as_the_readme_says():
    # "without recompiling, provided the new value is a float32 JAX array ...
    # A Python float, a NumPy scalar or jnp.asarray(0.001) compiles the step once more"
    assert 'state.hyperparams["learning_rate"] = jnp.float32(0.001)' in README
    tx = optax.inject_hyperparams(mxopt.rmsprop, static_args=("centered",))(
        learning_rate=0.01, wd=1e-4)

    def compiles(values):
        params = {"w": jnp.ones(3, jnp.float32)}
        state = tx.init(params)

        @jax.jit
        def step(params, state):
            updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
            return optax.apply_updates(params, updates), state

        params, state = step(params, state)
        for value in values:
            state.hyperparams["learning_rate"] = value
            params, state = step(params, state)
        return step._cache_size()

    assert compiles([jnp.float32(0.001), jnp.asarray(0.002, jnp.float32)]) == 1
    for other in (0.001, np.float32(0.001)):
        assert compiles([other, other]) == 2
    with jax.enable_x64(False):
        assert compiles([jnp.asarray(0.001)] * 2) == 2


def test_porting_snippet_is_in_the_readme_and_the_facade_docstring():
    for text in (README, mxopt.facade.__doc__):
        flat = " ".join(text.split())
        assert "weight = updater(i, grad, weight)" in flat
        assert "weight, state = optimizer.update(i, weight, grad, state)" in flat
