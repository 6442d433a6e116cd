"""A short training run with mxopt.rmsprop: a small MLP on a synthetic regression.

    python examples/demo.py [--steps 300] [--centered]

Prints the loss as it trains; exits non-zero if the loss did not drop.
"""
import argparse

import jax
import jax.numpy as jnp
import optax

import mxopt


def init_mlp(key, sizes):
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        params[f"fc{i + 1}_weight"] = jax.random.normal(sub, (fan_in, fan_out)) / jnp.sqrt(fan_in)
        params[f"fc{i + 1}_bias"] = jnp.zeros(fan_out)
    return params


def mlp(params, x):
    layers = len(params) // 2
    for i in range(1, layers + 1):
        x = x @ params[f"fc{i}_weight"] + params[f"fc{i}_bias"]
        if i < layers:
            x = jnp.tanh(x)
    return x


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--centered", action="store_true")
    args = parser.parse_args(argv)

    key_data, key_params = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.uniform(key_data, (512, 2), minval=-2, maxval=2)
    y = jnp.sin(x[:, :1]) * jnp.cos(x[:, 1:])
    params = init_mlp(key_params, [2, 32, 32, 1])

    batch = x.shape[0]
    # MXNet habit: the loss is a sum and rescale_grad divides by the batch size.
    lr = 0.01
    tx = mxopt.rmsprop(lr, centered=args.centered, wd=1e-4, rescale_grad=1.0 / batch,
                       clip_gradient=5.0)
    state = tx.init(params)

    def loss_sum(params):
        return jnp.sum((mlp(params, x) - y) ** 2)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_sum)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss / batch

    first = None
    for i in range(1, args.steps + 1):
        params, state, loss = step(params, state)
        first = float(loss) if first is None else first
        if i == 1 or i % 50 == 0 or i == args.steps:
            print(f"step {i:5d}/{args.steps}  loss {float(loss):.6f}  lr {lr:g}")
    final = float(jnp.mean((mlp(params, x) - y) ** 2))
    print(f"variant {'centered (Graves)' if args.centered else 'Tieleman & Hinton'}: "
          f"loss {first:.4f} -> {final:.4f}")
    if not final < 0.2 * first:
        raise SystemExit("loss did not drop by 5x")


if __name__ == "__main__":
    main()
