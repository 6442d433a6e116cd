"""Data-parallel (and sharded) training with mxopt.rmsprop on JAX's own machinery.

The same training code runs on one CPU, on several simulated devices, on several
processes, or on a GPU/TPU pod: only the mesh changes, never mxopt.

    python examples/distributed.py                          # one device
    python examples/distributed.py --devices 8 --mesh 2d    # 8 simulated CPU devices
    python examples/distributed.py --num-processes 2 --process-id 0 &   # two processes
    python examples/distributed.py --num-processes 2 --process-id 1

``--mesh``: ``data`` replicates params and splits the batch; ``fsdp`` also shards
every parameter along the data axis (ZeRO-3 style); ``2d`` uses a data x model
mesh with the hidden layer split over ``model``. ``--explicit-axes`` makes the
mesh's axes Explicit (``jax.sharding.AxisType.Explicit``, entered with
``jax.set_mesh``), so every array's sharding is part of its type; mxopt's state
then carries its parameter's sharding in its type too, and the jitted step
compiles once. mxopt's state is created by
``jax.jit(tx.init)`` and takes each parameter's sharding; its update is
elementwise, so it adds no communication: gradients are reduced by GSPMD as
part of the loss's backward pass, exactly as without mxopt.
"""
import argparse
import os
import sys


def parse(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
    parser.add_argument("--mesh", choices=("data", "fsdp", "2d"), default="data")
    parser.add_argument("--explicit-axes", action="store_true",
                        help="a mesh with Explicit axis types (with --mesh data)")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default="127.0.0.1:12355")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--multi-precision", action="store_true",
                        help="bfloat16 params with float32 master weights")
    parser.add_argument("--out", help="write the final params to this .npz (process 0 only, "
                        "unless the name contains {process})")
    args = parser.parse_args(argv)
    if args.explicit_axes and args.mesh != "data":
        # The model-parallel matmuls would need their output shardings spelled
        # out under Explicit axes; that is the model's business, not mxopt's.
        parser.error("--explicit-axes goes with --mesh data")
    return args


def main(argv=None):
    args = parse(argv)
    if args.devices > 1:  # must be set before JAX starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}")
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import mxopt

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    devices = np.array(jax.devices())
    model = 2 if args.mesh == "2d" and devices.size % 2 == 0 else 1
    axis_type = AxisType.Explicit if args.explicit_axes else AxisType.Auto
    mesh = Mesh(devices.reshape(devices.size // model, model), ("data", "model"),
                axis_types=(axis_type, axis_type))
    param_specs = {
        "data": {"w1": P(), "b1": P(), "w2": P(), "b2": P()},
        "fsdp": {"w1": P("data", None), "b1": P("data"), "w2": P("data", None), "b2": P()},
        "2d": {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()},
    }[args.mesh]

    # The same global data and initial params in every process (fixed seeds).
    rng = np.random.RandomState(0)
    sizes = (16, 64, 4)
    host_params = {"w1": rng.normal(size=sizes[:2]) / 4, "b1": np.zeros(sizes[1]),
                   "w2": rng.normal(size=sizes[1:]) / 8, "b2": np.zeros(sizes[2])}
    dtype = jnp.bfloat16 if args.multi_precision else jnp.float32
    host_params = {k: np.asarray(v, np.float32) for k, v in host_params.items()}
    teacher = rng.normal(size=(sizes[0], sizes[2]))
    batches = [rng.normal(size=(64, sizes[0])).astype(np.float32) for _ in range(args.steps)]

    with jax.set_mesh(mesh):
        def global_array(host, spec):
            # Spelled for every dimension (P() of a matrix is P(None, None)), as
            # jit spells its outputs: the step's inputs and outputs then have
            # equal types and it compiles once.
            sharding = NamedSharding(mesh, P(*spec, *[None] * (host.ndim - len(spec))))
            return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

        params = {k: global_array(v, param_specs[k]).astype(dtype)
                  for k, v in host_params.items()}
        tx = mxopt.rmsprop(0.01, centered=True, wd=1e-4, clip_gradient=1.0, clip_weights=2.0,
                           multi_precision=args.multi_precision)
        state = jax.jit(tx.init)(params)

        def loss_fn(params, x):
            p = jax.tree.map(lambda a: a.astype(jnp.float32), params)
            y = jnp.tanh(x @ jnp.asarray(teacher, jnp.float32))
            h = jnp.tanh(x @ p["w1"] + p["b1"])
            return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)

        def step(params, state, x):
            loss, grads = jax.value_and_grad(loss_fn)(params, x)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        step = jax.jit(step, donate_argnums=(0, 1))
        for i, batch in enumerate(batches):
            x = global_array(batch, P("data", None))
            params, state, loss = step(params, state, x)
            if jax.process_index() == 0 and (i == 0 or (i + 1) % 10 == 0):
                print(f"step {i + 1:4d}  loss {float(loss):.6f}  lr 0.01", flush=True)

    final = {k: np.asarray(v, np.float32) for k, v in
             multihost_utils.process_allgather(params, tiled=True).items()}
    digest = float(sum(np.abs(v).sum() for v in final.values()))
    print(f"process {jax.process_index()}/{jax.process_count()} devices {devices.size} "
          f"mesh {dict(mesh.shape)} param checksum {digest:.9g} compiles {step._cache_size()}",
          flush=True)
    if args.out and ("{process}" in args.out or jax.process_index() == 0):
        np.savez(args.out.format(process=jax.process_index()), **final)
    if args.num_processes > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
