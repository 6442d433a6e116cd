"""mxopt.rmsprop with MXNet's multipliers, schedulers and update counting,
against golden MXNet 1.9.1 runs (tools/make_golden_semantics.py)."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import mxopt
from mxopt import lr_scheduler, multipliers
from tests.conftest import GOLDEN_DIR

_G = np.load(os.path.join(GOLDEN_DIR, "rmsprop_semantics.npz"))
_META = json.loads(str(_G["meta"]))


def _wd_mult(name, leaf):
    # MXNet with param_idx2name: no decay unless _weight/_gamma, then set_wd_mult.
    if name in _META["wd_mult"]:
        return _META["wd_mult"][name]
    return multipliers.mxnet_module_wd_mult(name, leaf)


class SemanticsGoldenTest(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*range(len(_META["scenarios"])))
    def test_matches_mxnet(self, s):
        sc = _META["scenarios"][s]
        sched = getattr(lr_scheduler, sc["scheduler"])(**sc["scheduler_kwargs"])
        tx = mxopt.rmsprop(sched, centered=sc["centered"], wd=sc["wd"],
                           rescale_grad=sc["rescale_grad"], clip_gradient=sc["clip_gradient"],
                           lr_mult=_META["lr_mult"], wd_mult=_wd_mult,
                           begin_num_update=sc["begin_num_update"])
        names = _META["names"]
        params = {n: jnp.asarray(_G[f"p{i}_w0"]) for i, n in enumerate(names)}
        state = tx.init(params)

        @self.variant
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        for k in range(_META["steps"]):
            grads = {n: jnp.asarray(_G[f"p{i}_grads"][k]) for i, n in enumerate(names)}
            params, state = step(params, state, grads)
        self.assertEqual(int(state.count), sc["num_update"])
        for i, n in enumerate(names):
            # Same rates as MXNet's float64 lr * lr_mult, then float32: bit for bit.
            np.testing.assert_array_equal(np.asarray(params[n]), _G[f"s{s}_p{i}_weight"],
                                          err_msg=n)


@pytest.mark.parametrize("centered", [False, True])
def test_chain_counts_schedulers_like_the_alias(centered):
    sched = lr_scheduler.MultiFactorScheduler(step=[2, 4], factor=0.5, base_lr=0.1)
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    out = []
    for make in (mxopt.rmsprop, mxopt.rmsprop_chain):
        tx = make(sched, centered=centered, begin_num_update=1, lr_mult={"b": 3.0})
        p, s = params, tx.init(params)
        for _ in range(5):
            u, s = tx.update(jax.tree.map(lambda x: x * 0.5, p), s, p)
            p = optax.apply_updates(p, u)
        out.append(p)
    chex.assert_trees_all_close(*out, rtol=1e-6)


def test_begin_num_update_resumes_an_optax_schedule():
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    params = {"w": jnp.ones(3)}
    tx_full, tx_resumed = mxopt.rmsprop(schedule), mxopt.rmsprop(schedule, begin_num_update=4)
    assert int(tx_resumed.init(params).count) == 4
    # The 5th update of a full run and the 1st of a run resumed at 4 use schedule(4).
    s = tx_full.init(params)
    for _ in range(4):
        _, s = tx_full.update(params, s, params)
    s = s._replace(n=jax.tree.map(jnp.zeros_like, s.n))
    u_full, _ = tx_full.update(params, s, params)
    u_res, _ = tx_resumed.update(params, tx_resumed.init(params), params)
    chex.assert_trees_all_equal(u_full, u_res)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_begin_num_update(bad):
    with pytest.raises((TypeError, ValueError), match="begin_num_update"):
        mxopt.rmsprop(begin_num_update=bad)


def test_injected_hyperparameters_change_without_recompiling():
    tx = optax.inject_hyperparams(mxopt.rmsprop, static_args=("centered",))(
        learning_rate=0.1, wd=0.01, rescale_grad=1.0, clip_gradient=1.0, centered=True)
    params = {"w": jnp.ones(5)}
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    for k in range(4):
        for name, value in (("learning_rate", 0.1 / (k + 1)), ("wd", 0.01 * k),
                            ("rescale_grad", 1.0 + k), ("clip_gradient", 0.5 * k)):
            state.hyperparams[name] = jnp.asarray(value)
        params, state = step(params, state)
    assert len(traces) == 1
    assert bool(jnp.all(jnp.isfinite(params["w"])))
