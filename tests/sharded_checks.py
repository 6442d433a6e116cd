"""Run in a subprocess with 8 simulated CPU devices by tests/test_sharding.py
(XLA_FLAGS must be set before JAX starts). Exits non-zero on the first failure."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import mxopt  # noqa: E402

assert len(jax.devices()) == 8, jax.devices()

MESHES = {
    "fsdp": (Mesh(np.array(jax.devices()).reshape(8), ("fsdp",)),
             {"w1": P("fsdp", None), "b1": P("fsdp"), "w2": P(None, "fsdp"), "s": P()}),
    "2d": (Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model")),
           {"w1": P("data", "model"), "b1": P("model"), "w2": P("model", None), "s": P()}),
}
VARIANTS = {
    "plain": dict(),
    "centered-all-options": dict(centered=True, wd=0.01, rescale_grad=0.5, clip_gradient=0.5,
                                 clip_weights=0.7, lr_mult={"b1": 2.0}, wd_mult={"s": 0.0}),
    "multi-precision": dict(centered=True, multi_precision=True, wd=0.01),
    "scheduler": dict(learning_rate=mxopt.lr_scheduler.CosineScheduler(20, base_lr=0.05),
                      begin_num_update=3),
}
SHAPES = {"w1": (16, 8), "b1": (8,), "w2": (8, 16), "s": ()}


def host_tree(seed, dtype):
    rng = np.random.RandomState(seed)
    return {k: np.asarray(rng.normal(size=s), dtype) for k, s in SHAPES.items()}


def check(mesh_name, variant):
    mesh, specs = MESHES[mesh_name]
    kwargs = dict(VARIANTS[variant])
    dtype = jnp.bfloat16 if kwargs.get("multi_precision") else jnp.float32
    tx = mxopt.rmsprop(**{"learning_rate": 0.05, **kwargs})
    shardings = {k: NamedSharding(mesh, spec) for k, spec in specs.items()}
    host_params = host_tree(0, dtype)
    params = {k: jax.device_put(v, shardings[k]) for k, v in host_params.items()}

    state = jax.jit(tx.init)(params)
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = jax.tree_util.keystr(path)
        key = next((k for k in SHAPES if f"'{k}'" in name), None)
        if key is None or leaf.shape != SHAPES[key]:
            continue  # counts and other scalars
        want = shardings[key]
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim), (mesh_name, variant, name,
                                                                 leaf.sharding, want)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    grads = [{k: jax.device_put(v, shardings[k]) for k, v in host_tree(s, dtype).items()}
             for s in range(1, 6)]
    jitted = jax.jit(step, donate_argnums=(0, 1))
    hlo = jitted.lower(params, state, grads[0]).compile().as_text()
    for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute",
                       "reduce-scatter"):
        assert collective not in hlo, (mesh_name, variant, collective)

    ref_params = {k: jnp.asarray(v) for k, v in host_params.items()}
    ref_state = tx.init(ref_params)
    ref_step = jax.jit(step)
    for g in grads:
        params, state = jitted(params, state, g)
        ref_params, ref_state = ref_step(ref_params, ref_state,
                                         {k: jnp.asarray(np.asarray(v)) for k, v in g.items()})
    for k in SHAPES:
        assert params[k].sharding.is_equivalent_to(shardings[k], params[k].ndim)
        np.testing.assert_allclose(np.asarray(params[k], np.float32),
                                   np.asarray(ref_params[k], np.float32), rtol=1e-5, atol=1e-6,
                                   err_msg=f"{mesh_name} {variant} {k}")

    # A state restored from elsewhere (host arrays, another layout): the
    # documented reshard path puts it on the layout tx.init gives, and the step
    # then computes the same values.
    restored = jax.tree.map(np.asarray, state)
    layout = jax.tree.map(lambda x: x.sharding, jax.jit(tx.init)(params))
    resharded = jax.device_put(restored, layout)
    p1, _ = jax.jit(step)(params, state, grads[0])
    p2, _ = jax.jit(step)(params, resharded, grads[0])
    for k in SHAPES:
        np.testing.assert_array_equal(np.asarray(p1[k], np.float32), np.asarray(p2[k], np.float32))
    print(f"ok {mesh_name} {variant}")


if __name__ == "__main__":
    for mesh_name in MESHES:
        for variant in VARIANTS:
            check(mesh_name, variant)
    sys.exit(0)
