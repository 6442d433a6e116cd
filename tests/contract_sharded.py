"""The contract suite's sharded half: every entry of tests/optimizer_list.py on 8
simulated CPU devices, on a mesh with Auto axes and on one with Explicit axes.

Run by tests/test_contracts.py in its own process (the device count is fixed
when JAX starts). For each entry and mesh it checks that

* ``jax.jit(tx.init)`` gives every state leaf shaped like a param (or row-wise,
  ``(rows, 1)``) that param's (row) sharding, and so does abstract init: ``tx.init`` of sharded
  ``ShapeDtypeStruct`` params, and planning the state without allocating it;
* two jitted steps return the state with the types (shapes, dtypes and, with
  Explicit axes, sharding) init gave it, and with Explicit axes compile once;
* the result agrees with the unsharded run.

It prints ``ok <mesh> <entry id>`` per pass and exits non-zero on the first failure.
"""
import functools
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from optimizer_list import ENTRIES  # noqa: E402

assert len(jax.devices()) == 8, jax.devices()
BY_ID = {e.id: e for e in ENTRIES}

SHAPES = {"w": (16, 4), "b": (8,)}
SPECS = {"w": P("x", None), "b": P("x")}  # rows sharded (a column b too)


def shapes_of(entry):
    # The shapes the entry trains (a column b for 2-D-only optimizers).
    return {k: entry.shape(s) for k, s in SHAPES.items()}


def host_tree(entry, seed, dtype, nan=False):
    rng = np.random.RandomState(seed)
    tree = {k: np.asarray(rng.uniform(-1, 1, s)).astype(dtype)
            for k, s in shapes_of(entry).items()}
    if nan:
        tree["b"][3] = np.nan
    return tree


@functools.lru_cache(maxsize=None)  # shared by both meshes: one compile per entry
def unsharded_run(entry_id, dtype):
    entry = BY_ID[entry_id]
    tx = entry.build()
    params = {k: jnp.asarray(v) for k, v in host_tree(entry, 0, dtype).items()}
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
    for k in range(2):
        params, state = step(params, state,
                             host_tree(entry, 10 + k, dtype, nan=_skips(entry, k)))
    return params


def _skips(entry, k):
    return bool(entry.kwargs.get("skip_nonfinite")) and k == 1


def _apply(tx, params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def _param_key(path):
    name = jax.tree_util.keystr(path)
    return next((k for k in SHAPES if f"['{k}']" in name), None)


def check_shardings(state, shardings, shapes, what):
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        key = _param_key(path)
        if key is None or leaf.shape[:1] != shapes[key][:1] or leaf.ndim != len(shapes[key]):
            continue  # counts and flags
        # Shaped like the param, or row-wise ((rows, 1), GroupAdaGrad's history):
        # sharded like its rows either way.
        want, got = shardings[key], leaf.sharding
        if isinstance(got.mesh, jax.sharding.AbstractMesh):  # planned: compare the specs
            ok = _padded(got.spec, leaf.ndim) == _padded(want.spec, leaf.ndim)
        else:
            ok = got.is_equivalent_to(want, leaf.ndim)
        assert ok, (what, jax.tree_util.keystr(path), got)


def _padded(spec, ndim):
    return tuple(spec) + (None,) * (ndim - len(spec))


def check(entry, kind):
    axis_type = AxisType.Explicit if kind == "explicit" else AxisType.Auto
    mesh = jax.make_mesh((8,), ("x",), axis_types=(axis_type,))
    dtype = jnp.bfloat16 if entry.multi_precision else np.float32
    tx = entry.build()
    shapes = shapes_of(entry)
    # Specs spelled out to the leaf's rank (P('x', None) for a column b): with
    # Explicit axes a step's output spells them so, and a shorter spelling of
    # the same sharding is another type, which would recompile.
    shardings = {k: NamedSharding(mesh, P(*_padded(SPECS[k], len(shapes[k]))))
                 for k in SHAPES}
    with jax.set_mesh(mesh):
        params = {k: jax.device_put(v, shardings[k])
                  for k, v in host_tree(entry, 0, dtype).items()}
        state = jax.jit(tx.init)(params)
        check_shardings(state, shardings, shapes, "init")
        abstract = {k: jax.ShapeDtypeStruct(shapes[k], dtype, sharding=shardings[k])
                    for k in SHAPES}
        # Abstract init: called directly on sharded ShapeDtypeStructs, and
        # planned without allocating (Explicit axes carry the sharding in the
        # types; with Auto axes the compiler decides it).
        check_shardings(tx.init(abstract), shardings, shapes, "init of ShapeDtypeStructs")
        if kind == "explicit":
            planned = jax.eval_shape(tx.init, abstract)
        else:
            planned = jax.jit(tx.init).lower(abstract).compile().output_shardings
            planned = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                   planned, jax.eval_shape(tx.init, abstract))
        check_shardings(planned, shardings, shapes, "abstract init")
        types0 = jax.tree.map(jax.typeof, state)
        # Unjitted too: an update outside jit keeps the types (a lax.cond whose
        # branches differ in sharding would fail here).
        eager_grads = {key: jax.device_put(v, shardings[key])
                       for key, v in host_tree(entry, 9, dtype, nan=_skips(entry, 1)).items()}
        _, eager_state = _apply(tx, params, state, eager_grads)
        assert jax.tree.map(jax.typeof, eager_state) == types0, (entry.id, kind, "eager")
        step = jax.jit(lambda p, s, g: _apply(tx, p, s, g))
        for k in range(2):
            grads = {key: jax.device_put(v, shardings[key])
                     for key, v in host_tree(entry, 10 + k, dtype,
                                             nan=_skips(entry, k)).items()}
            params, state = step(params, state, grads)
            types = jax.tree.map(jax.typeof, state)
            assert types == types0, (entry.id, kind, types, types0)
        if kind == "explicit":
            # With Auto axes a jitted step's outputs may spell a sharding
            # differently from device_put's (P('x') for P('x', None)), which
            # alone recompiles; with Explicit axes the types must match exactly.
            assert step._cache_size() == 1, (entry.id, kind, step._cache_size())
        check_shardings(state, shardings, shapes, "after two steps")
    want = unsharded_run(entry.id, dtype)
    for key in SHAPES:
        np.testing.assert_allclose(np.asarray(params[key], np.float64),
                                   np.asarray(want[key], np.float64), rtol=1e-6, atol=1e-7,
                                   err_msg=f"{entry.id} {kind} {key}")
    print(f"ok {kind} {entry.id}", flush=True)


if __name__ == "__main__":
    for entry in ENTRIES:
        for kind in ("auto", "explicit"):
            check(entry, kind)
