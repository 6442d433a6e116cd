"""What exact weight clipping costs, and what relaxing it would buy.

A plain script (not a test: timings are never asserted anywhere), written for
issue 14's open decision. ``clip_weights`` returns an update ``u'`` such that
``apply_updates(w, u')`` never leaves ``[-b, b]``, equals ``w + u`` wherever
that stays inside, and is within an ulp of ``clip(w + u)`` elsewhere (README,
"Numerics"). The shipped form (``mxopt._kernels.clipped_weight_update``) takes
two selects and an ulp step on every element: the step is needed because
``w + (t - w)`` can round one ulp past the target ``t``. This script measures
the shipped form against two cheaper forms that break that contract, so that
the cost of each rule of the contract can be read off one table:

- ``exact``: the shipped form.
- ``no_step``: ``select(|w + u| > b, clamp(w + u) - w, u)``, without the ulp
  step: it can leave the weight one ulp outside ``[-b, b]``.
- ``clamp_only``: ``clamp(w + u) - w`` everywhere: it can also change the
  weight where ``w + u`` stays inside (``w + ((w + u) - w)`` is not always
  ``w + u``).

For each form it prints:

- **contract violations** on float16, counted exhaustively over the clipped
  side (every finite weight against ``u = +-inf``, for each bound; a clipped
  update depends only on the weight, the bound and the side) and over a fixed
  random sample of (weight, update) pairs for the inside: weights that end
  outside ``[-b, b]``, weights that differ from ``w + u`` where it was inside,
  and clipped weights further than ``2 eps max(|w|, b)`` from ``clip(w + u)``;
- **compile time** of the benchmark's RMSProp step (``bench_rmsprop``'s options:
  schedule, wd, rescale_grad, clip_gradient, multipliers, ``clip_weights=2``),
  the fastest of ``--compile-reps`` interleaved rounds, with the optimized
  HLO's instruction count; against ``optax_all`` (optax's closest chain, which
  has no weight clipping) and mxopt without ``clip_weights``;
- **step time** (median and fastest of ``--rounds`` interleaved rounds of 10
  jitted, donated steps) against the same and ``bench_rmsprop``'s floor.

The cheaper forms are swapped into the kernel module for their compiles only;
nothing here changes what mxopt ships.

Examples::

    python benchmarks/bench_clip_weights.py                            # everything
    python benchmarks/bench_clip_weights.py --trees small --no-step    # compile only
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_rmsprop as common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

import mxopt  # noqa: E402

# _kernels: the weight clip whose cost this measures is swapped there.
from mxopt import _kernels, reference  # noqa: E402

EXACT = _kernels.clipped_weight_update


def bound_as(bound, dtype):
    """A static bound as the kernels receive it (MXNet's parse to float32, then
    the weight's dtype), so that every form and the counter clip to the same b."""
    return reference.kernel_float(bound).astype(dtype)


def _static_bounds(bound, w):
    b = jnp.asarray(bound_as(bound, w.dtype))
    return -b, b


def no_step(w, u, bound):
    """The shipped form without its ulp step (not the contract: see the docstring)."""
    lo, b = _static_bounds(bound, w)
    new = lax.add(w, u)
    return lax.select(lax.gt(lax.abs(new), b), lax.sub(lax.clamp(lo, new, b), w), u)


def clamp_only(w, u, bound):
    """``clamp(w + u) - w`` everywhere (not the contract: see the docstring)."""
    lo, b = _static_bounds(bound, w)
    return lax.sub(lax.clamp(lo, lax.add(w, u), b), w)


FORMS = {"exact": EXACT, "no_step": no_step, "clamp_only": clamp_only}
FLOAT16_BOUNDS = (1e-3, 0.3333, 2.0, 100.0)


class using_form:  # noqa: N801 (a context manager used like a function)
    """Install ``form`` as the kernel module's weight clip while tracing."""

    def __init__(self, form):
        self.form = form

    def __enter__(self):
        _kernels.clipped_weight_update = self.form

    def __exit__(self, *exc):
        _kernels.clipped_weight_update = EXACT


def contract_violations(form, bound, w, u):
    """``(outside, changed_inside, far)`` counts of the contract's three rules
    broken by ``form`` for weights ``w``, updates ``u`` and a static ``bound``
    (float16 arrays), as ``apply_updates`` lands them."""
    w, u = jnp.asarray(w), jnp.asarray(u)
    new = np.asarray(jax.jit(lambda w, u: w + form(w, u, bound))(w, u), np.float64)
    plain = np.asarray(w + u, np.float64)
    w64, b = np.asarray(w, np.float64), float(bound_as(bound, np.float16))
    inside = np.abs(plain) <= b
    clipped = np.abs(plain) > b
    outside = int(np.sum(np.abs(new) > b))
    changed = int(np.sum(inside & (new != plain)))
    err = np.abs(new - np.clip(plain, -b, b))
    scale = np.maximum(np.abs(w64), b)
    finite = np.abs(w64) + b <= float(np.finfo(np.float16).max)  # b - w does not overflow
    far = int(np.sum(clipped & finite & (err > 2 * float(np.finfo(np.float16).eps) * scale)))
    return outside, changed, far


def float16_cases(sample_updates, seed=0):
    """Every finite float16 weight against both infinite updates (the clipped
    side, exhaustively), then every finite weight against ``sample_updates``
    random finite updates each (the inside)."""
    w = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    w = w[np.isfinite(w)]
    rng = np.random.default_rng(seed)
    finite = w[np.abs(w) < 8]  # updates of a step's size
    ws = np.concatenate([w, w, np.repeat(w, sample_updates)])
    us = np.concatenate([np.full_like(w, np.inf), np.full_like(w, -np.inf),
                         rng.choice(finite, w.size * sample_updates)])
    return ws, us


def contract_table(sample_updates):
    ws, us = float16_cases(sample_updates)
    plain = np.abs((ws + us).astype(np.float64))  # float16 sums, as apply_updates makes them
    print(f"\n== contract violations, float16: {ws.size:,} (weight, update) pairs per bound "
          f"({2 * (ws.size // (sample_updates + 2)):,} clipped exhaustively, the rest a sample)")
    print(f"{'form':12s} {'bound':>8s} {'clipped':>10s} {'ends outside':>13s} "
          f"{'inside changed':>15s} {'> 2eps*scale':>13s}")
    for name, form in FORMS.items():
        for bound in FLOAT16_BOUNDS:
            clipped = int(np.sum(plain > float(bound_as(bound, np.float16))))
            outside, changed, far = contract_violations(form, bound, ws, us)
            print(f"{name:12s} {bound:8g} {clipped:10,d} {outside:13,d} {changed:15,d} "
                  f"{far:13,d}")


def traced_with(form, make):
    """``make``'s ``(step, init)`` with ``step`` traced under :class:`using_form`,
    so that every compile of it (:func:`bench_rmsprop.time_compiles` too) sees
    ``form``."""
    step, init = make

    def traced(*args):
        with using_form(form):
            return step(*args)
    return traced, init


def runners_for(tree, centered):
    """``(runners, floor)``: a :class:`bench_rmsprop.JaxRunner` per step, each
    traced with its weight-clip form, and the floor's runner."""
    names, shapes = common.tree_leaves(tree)
    params_np, grads_np = common.make_data(shapes, 0)
    grads = {n: jnp.asarray(g) for n, g in zip(names, grads_np)}
    steps = {"optax_all": (common.optax_tx(centered, True), EXACT),
             "mxopt w/o clip_weights": (common.mxopt_tx(centered, False), EXACT)}
    for name, form in FORMS.items():
        steps[f"mxopt {name}"] = (common.mxopt_tx(centered, True), form)
    runners = {key: common.JaxRunner(traced_with(form, common.tx_step(tx)), names, params_np,
                                     grads)
               for key, (tx, form) in steps.items()}
    floor = common.JaxRunner(common.floor_step(3 if centered else 1), names, params_np, grads)
    return runners, floor


def instructions(compiled):
    return sum(1 for line in compiled.as_text().splitlines() if " = " in line)


def step_times(runners, rounds, calls=10):
    for run in runners.values():
        for _ in range(3):
            run()
    times = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                run()
            times[key].append((time.perf_counter() - t0) / calls)
    return times


def tree_table(tree, centered, args):
    runners, floor = runners_for(tree, centered)
    common.time_compiles(runners, args.compile_reps)
    compile_s = {key: run.compile_s for key, run in runners.items()}
    steps = step_times({**runners, "floor": floor}, args.rounds) if args.step else None
    ref = compile_s["optax_all"]
    variant = "centered" if centered else "plain"
    print(f"\n== {tree}, {variant}: {common.TREES[tree]}")
    print(f"{'step':24s} {'compile s':>9s} {'/optax_all':>10s} {'instrs':>7s}"
          + (f" {'median ms':>9s} {'min ms':>7s} {'/floor':>7s}" if steps else ""))
    floor_ms = statistics.median(steps["floor"]) * 1e3 if steps else None
    for key, run in runners.items():
        line = (f"{key:24s} {compile_s[key]:9.2f} {compile_s[key] / ref:10.2f} "
                f"{instructions(run.compiled):7,d}")
        if steps:
            med, mn = statistics.median(steps[key]) * 1e3, min(steps[key]) * 1e3
            line += f" {med:9.2f} {mn:7.2f} {med / floor_ms:7.2f}"
        print(line)
    if steps:
        print(f"{'floor':24s} {'':9s} {'':10s} {'':7s} {floor_ms:9.2f} "
              f"{min(steps['floor']) * 1e3:7.2f} {1:7.2f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", default="resnet50_hwio,resnet50,small",
                   help="comma-separated trees of bench_rmsprop (default: %(default)s)")
    p.add_argument("--variants", default="plain", help="plain, centered or both (comma-separated)")
    p.add_argument("--compile-reps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds of 10 steps")
    p.add_argument("--no-step", dest="step", action="store_false", help="skip step timing")
    p.add_argument("--no-contract", dest="contract", action="store_false",
                   help="skip the float16 contract counts")
    p.add_argument("--sample-updates", type=int, default=64,
                   help="random updates per float16 weight for the inside counts")
    args = p.parse_args(argv)
    args.trees = [t for t in args.trees.split(",") if t]
    unknown = [t for t in args.trees if t not in common.TREES]
    if unknown:
        p.error(f"--trees: unknown {unknown}; choose from {sorted(common.TREES)}")
    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - {"plain", "centered"}:
        p.error(f"--variants: {args.variants!r}; give plain, centered or plain,centered")
    args.centered = [v == "centered" for v in variants]
    return args


def main(argv=None):
    args = parse_args(argv)
    for line in common.machine_lines(None, None):
        print(line)
    print(f"mxopt {mxopt.__version__}; clip_weights={common.HP['clip_weights']} in the steps")
    if args.contract:
        contract_table(args.sample_updates)
    for tree in args.trees:
        for centered in args.centered:
            tree_table(tree, centered, args)


if __name__ == "__main__":
    main()
