"""How fast is one step of each of MXNet's optimizers in mxopt? Against optax, torch and the floor.

A plain script (not a test: timings are never asserted anywhere). On ResNet-50's
trainable parameters in Flax's layout (convolution kernels ``(h, w, in, out)``,
``benchmarks/resnet50_shapes.json``) it prints one row per optimizer of issues 17 and
18 (LARS and LAMB), measured in one run:

- ``mxopt``: the fused alias (``mxopt.sgd(momentum=0.9)``, ``mxopt.nag``, ...),
  MXNet's defaults, no decay, rescaling or clipping (options optax's aliases have
  too);
- ``optax``: optax's nearest alias with the same options (``optax.sgd`` with
  ``momentum`` and ``nesterov``, ``signum``, ``adam``, ``adagrad`` with a zero
  initial accumulator, ``adadelta`` with ``learning_rate=1`` (MXNet's AdaDelta
  has no rate), ``adamax``, ``nadam``, ``lars`` with ``momentum=0.9``, ``lamb``
  with MXNet's ``eps=1e-6``). Optax has no Ftrl or FTML: those rows
  are a plain-JAX transformation of MXNet's formula (``jax.tree.map``, no
  rounding guards), the optax way a user would write one, and say so;
- ``torch``: ``torch.optim``'s nearest optimizer (``SGD``, ``SGD(nesterov=True)``,
  ``Adam``, ``Adagrad``, ``Adadelta(lr=1)``, ``Adamax``, ``NAdam``;
  ``foreach=True``; none for Signum, Ftrl or FTML), each timed in several fresh
  processes (``--torch-python``, ``--torch-procs``): torch's foreach step is
  bimodal from one process to the next on a shared 2-core machine, so the table
  gives the fastest and the median of the processes' medians;
- ``floor``: per leaf ``w + g`` and ``s * 0.9 + g`` for each of the optimizer's
  state buffers, jitted with the same buffers donated (``bench_rmsprop.py``'s
  :func:`floor_step`): the arrays an optimizer must read and write, with
  trivial arithmetic and XLA:CPU's one loop per output. Its bytes over its time
  is the memory bandwidth the table reports.

- ``structure``: mxopt's own compiled step with its arithmetic made trivial
  (``benchmarks/structure.py``): read off the optimized HLO of the row's
  ``mxopt`` step, the same outputs per leaf, each written by a loop reading the
  same parameter-sized arrays (old buffers or other loops' results; LARS's and
  LAMB's norms as reductions over the same arrays feeding the loops as
  scalars), with adds and multiplies by constants and no temporaries. The
  report checks that its passes and temporary bytes equal mxopt's and warns
  where they do not (or where the step cannot be rebuilt, in which case the
  row has no time).

Jitted steps are ``step(params, state, grads) -> (optax.apply_updates(params,
updates), new_state)`` with params and state donated, compiled from empty caches
(the compile column: trace + lower + compile, the fastest of ``--compile-reps``
rounds over mxopt's and optax's steps), then run round-robin (mxopt, optax, the
structure step and the floor of the same state size interleaved, so a burst of
load hits them alike; a step that frees large temporaries is followed by a
20 ms pause, since the freeing otherwise slows the next step). "passes" is the
bytes XLA's cost analysis counts as read and written, in units of the parameter
bytes. Two structural bounds are
reported. The bytes bound is a row's passes over the floor's: mxopt's step is
within it when mxopt / floor in time is at most that (the step then moves its
bytes at the floor's bandwidth). But XLA:CPU's loops with more input streams
move their bytes more slowly than the floor's, so that bound is lower than what
a pure-XLA step with the optimizer's loops reaches; the measured structural
bound is the structure row itself: mxopt's step is within it when mxopt /
structure (``/struct``) is at most 1.0 (``st/fl`` is structure / floor).
Medians of interleaved runs move by a few percent from run to run here, so a
ratio up to 1.05 is reported as "within noise".

Examples::

    python benchmarks/bench_family.py --quick                 # a small tree, seconds
    python benchmarks/bench_family.py --torch-python ../torchref/bin/python --json out.json
    python benchmarks/bench_family.py --optimizers adam,ftml --reps 10
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # bench_rmsprop: the tree, the jitted runner, the floor
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import bench_rmsprop as common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import mxopt  # noqa: E402

# ---- the optimizers ----------------------------------------------------------------


def _ftrl_plain(learning_rate, lamda1, beta):
    """MXNet's Ftrl formula as a plain optax transformation (optax has none)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (zeros, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params):
        z, n = state

        def leaf(g, w, z, n):
            n_new = n + g * g
            z_new = z + g - (jnp.sqrt(n_new) - jnp.sqrt(n)) * w / learning_rate
            w_new = jnp.where(jnp.abs(z_new) > lamda1,
                              (jnp.sign(z_new) * lamda1 - z_new)
                              / ((beta + jnp.sqrt(n_new)) / learning_rate), 0.0)
            return w_new - w, z_new, n_new

        out = jax.tree.map(leaf, grads, params, z, n)
        pick = lambda k: jax.tree.map(lambda _, o: o[k], grads, out)  # noqa: E731
        return pick(0), (pick(1), pick(2))

    return optax.GradientTransformation(init, update)


def _ftml_plain(learning_rate, beta1, beta2, epsilon):
    """MXNet's FTML formula as a plain optax transformation (optax has none)."""

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return (jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

    def update(grads, state, params):
        count, d, v, z = state
        t = (count + 1).astype(jnp.float32)

        def leaf(g, w, d, v, z):
            v_new = beta2 * v + (1 - beta2) * g * g
            d_t = (1 - beta1 ** t) / learning_rate * (jnp.sqrt(v_new / (1 - beta2 ** t))
                                                      + epsilon)
            z_new = beta1 * z + (1 - beta1) * g - (d_t - beta1 * d) * w
            return -z_new / d_t - w, d_t, v_new, z_new

        out = jax.tree.map(leaf, grads, params, d, v, z)
        pick = lambda k: jax.tree.map(lambda _, o: o[k], grads, out)  # noqa: E731
        return pick(0), (count + 1, pick(1), pick(2), pick(3))

    return optax.GradientTransformation(init, update)


# name: (mxopt, optax (label, tx), torch (label, class name, kwargs) or None,
# number of state buffers). MXNet's defaults; the same options in each row.
OPTIMIZERS = {
    "sgd": (lambda: mxopt.sgd(0.01, momentum=0.9),
            ("optax.sgd(momentum=0.9)", lambda: optax.sgd(0.01, momentum=0.9)),
            ("SGD(momentum=0.9)", "SGD", dict(lr=0.01, momentum=0.9)), 1),
    "nag": (lambda: mxopt.nag(0.01, momentum=0.9),
            ("optax.sgd(momentum=0.9, nesterov)",
             lambda: optax.sgd(0.01, momentum=0.9, nesterov=True)),
            ("SGD(nesterov=True)", "SGD", dict(lr=0.01, momentum=0.9, nesterov=True)), 1),
    "signum": (lambda: mxopt.signum(0.01, momentum=0.9),
               ("optax.signum(beta=0.9)", lambda: optax.signum(0.01, beta=0.9)), None, 1),
    "adam": (lambda: mxopt.adam(0.001),
             ("optax.adam", lambda: optax.adam(0.001)),
             ("Adam", "Adam", dict(lr=0.001)), 2),
    "adagrad": (lambda: mxopt.adagrad(0.01, eps=1e-7),
                ("optax.adagrad(initial 0)",
                 lambda: optax.adagrad(0.01, initial_accumulator_value=0.0, eps=1e-7)),
                ("Adagrad", "Adagrad", dict(lr=0.01, eps=1e-7)), 1),
    "adadelta": (lambda: mxopt.adadelta(rho=0.9, epsilon=1e-5),
                 ("optax.adadelta(lr=1)", lambda: optax.adadelta(1.0, rho=0.9, eps=1e-5)),
                 ("Adadelta(lr=1)", "Adadelta", dict(lr=1.0, rho=0.9, eps=1e-5)), 2),
    "adamax": (lambda: mxopt.adamax(0.002),
               ("optax.adamax", lambda: optax.adamax(0.002)),
               ("Adamax", "Adamax", dict(lr=0.002)), 2),
    "nadam": (lambda: mxopt.nadam(0.001),
              ("optax.nadam", lambda: optax.nadam(0.001)),
              ("NAdam", "NAdam", dict(lr=0.001)), 2),
    "ftrl": (lambda: mxopt.ftrl(0.1, lamda1=0.01, beta=1.0),
             ("plain JAX (optax has no Ftrl)", lambda: _ftrl_plain(0.1, 0.01, 1.0)), None, 2),
    "ftml": (lambda: mxopt.ftml(0.01),
             ("plain JAX (optax has no FTML)", lambda: _ftml_plain(0.01, 0.6, 0.999, 1e-8)),
             None, 3),
    # Issue 18. LARS as a Gluon Trainer runs it (no names: every leaf gets the
    # trust ratio, as optax.lars's default mask gives it); torch has neither.
    "lars": (lambda: mxopt.lars(0.1, momentum=0.9, eta=0.001, keep_rate_names=()),
             ("optax.lars(momentum=0.9)",
              lambda: optax.lars(0.1, trust_coefficient=0.001, eps=0.0, momentum=0.9)),
             None, 1),
    "lamb": (lambda: mxopt.lamb(0.001),
             ("optax.lamb(eps=1e-6)",
              lambda: optax.lamb(0.001, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0)),
             None, 2),
}

QUICK_TREE = (["conv_weight", "conv_bias"], [(3, 3, 64, 64), (64,)])  # two loops to compile


def make_data(shapes, seed):
    rng = np.random.default_rng(seed)
    params = [0.05 * rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [0.01 * rng.standard_normal(s, dtype=np.float32) for s in shapes]
    # No exact zeros: MXNet's Adamax gives 0 / 0 = NaN where a gradient has been 0
    # from the start (mxopt.adamax's docstring), and NaN is no step to time.
    grads = [np.where(g == 0, np.float32(1e-3), g) for g in grads]
    return params, grads


# ---- torch, in fresh processes --------------------------------------------------------

TORCH_SCRIPT = textwrap.dedent(r"""
    import json, sys, time
    import numpy as np
    import torch
    cfg = json.load(open(sys.argv[1]))
    torch.set_num_threads(cfg["threads"])
    rng = np.random.default_rng(cfg["seed"])
    params = []
    for shape in cfg["shapes"]:
        p = torch.tensor(0.05 * rng.standard_normal(shape, dtype=np.float32),
                         requires_grad=True)
        p.grad = torch.tensor(0.01 * rng.standard_normal(shape, dtype=np.float32))
        params.append(p)
    opt = getattr(torch.optim, cfg["cls"])(params, foreach=True, **cfg["kwargs"])
    for _ in range(cfg["warmup"]):
        opt.step()
    times = []
    for _ in range(cfg["reps"]):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    ok = all(bool(torch.isfinite(p).all()) for p in params)
    print(json.dumps({"times": times, "version": torch.__version__, "finite": ok}))
""")


def run_torch(python, cls, kwargs, shapes, args):
    """Per-process median step times (s), one fresh process each."""
    cfg = dict(cls=cls, kwargs=kwargs, shapes=[list(s) for s in shapes], seed=args.seed,
               warmup=args.warmup, reps=args.reps, threads=args.threads)
    medians, version = [], None
    with tempfile.TemporaryDirectory() as tmp:
        script, cfg_path = os.path.join(tmp, "torch_step.py"), os.path.join(tmp, "cfg.json")
        with open(script, "w") as f:
            f.write(TORCH_SCRIPT)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        for _ in range(args.torch_procs):
            proc = subprocess.run([python, script, cfg_path], cwd=tmp, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                print(f"    torch run failed:\n{proc.stderr[-2000:]}", flush=True)
                return None, None
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if not res["finite"]:
                print(f"    warning: torch {cls} produced non-finite weights")
            medians.append(statistics.median(res["times"]))
            version = res["version"]
    return medians, version


def torch_python(args):
    """The interpreter torch rows run in, or None (then they are skipped)."""
    python = args.torch_python or sys.executable
    proc = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        print(f"torch is not importable with {python}: no torch rows (--torch-python)")
        return None
    return python


# ---- measuring ------------------------------------------------------------------------

def _median_ms(times):
    return 1e3 * statistics.median(times) if times else None


# A step that frees large temporaries (optax's AdaDelta, Ftrl and FTML
# transformations: 160 to 205 MB) slows whichever step runs right after it by
# up to 40% on this machine (measured: the same step 36 ms after another, 49 ms
# right after optax's Ftrl); a 20 ms pause after it removes that.
SETTLE_TEMP_BYTES = 1_000_000
SETTLE_S = 0.02


def measure(args):
    if args.quick:
        names, shapes = QUICK_TREE
        tree = "quick: a 3x3 convolution kernel and its bias"
    else:
        names, shapes = common.tree_leaves("resnet50_hwio")
        tree = "resnet50_hwio: " + common.TREES["resnet50_hwio"]
    params_np, grads_np = make_data(shapes, args.seed)
    nbytes = sum(a.nbytes for a in params_np)
    grads = {n: jnp.array(g) for n, g in zip(names, grads_np)}
    python = torch_python(args) if args.torch else None
    floors, rows = {}, []
    for name in args.optimizers:
        make_mxopt, (optax_label, make_optax), torch_spec, num_states = OPTIMIZERS[name]
        print(f"[{name}] compiling ...", flush=True)
        runners = {
            "mxopt": common.JaxRunner(common.tx_step(make_mxopt()), names, params_np, grads),
            "optax": common.JaxRunner(common.tx_step(make_optax()), names, params_np, grads),
        }
        common.time_compiles(dict(runners), args.compile_reps)
        # The structure floor: mxopt's own loops with trivial arithmetic, read off
        # its compiled step (benchmarks/structure.py), set up before any step runs.
        structure, notes = common.structure_runner(runners["mxopt"], make_mxopt().init, names,
                                                   params_np, grads)
        if structure is not None:
            runners["structure"] = structure
            notes.append(common.parallel_note(structure, runners["mxopt"]))
        if num_states not in floors:  # one floor per state size, kept for later rows
            floors[num_states] = common.JaxRunner(common.floor_step(num_states), names,
                                                  params_np, grads)
            floors[num_states].times = []
        runners["floor"] = floors[num_states]
        times = {key: [] for key in runners}
        for _ in range(args.warmup):
            for run in runners.values():
                run()
        for _ in range(args.reps):
            for key, run in runners.items():
                t0 = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - t0)
                if run.temp_bytes >= SETTLE_TEMP_BYTES:
                    time.sleep(SETTLE_S)
        floors[num_states].times += times["floor"]
        for key in ("mxopt", "optax"):
            if not runners[key].check():
                print(f"    warning: {key} {name} produced non-finite weights")
        row = dict(name=name, optax_label=optax_label, num_states=num_states,
                   mxopt_ms=_median_ms(times["mxopt"]), optax_ms=_median_ms(times["optax"]),
                   floor_ms=_median_ms(times["floor"]),
                   structure_ms=_median_ms(times.get("structure")), structure_notes=notes,
                   passes_structure=(structure.bytes_accessed / nbytes if structure else None),
                   compile_mxopt_s=runners["mxopt"].compile_s,
                   compile_optax_s=runners["optax"].compile_s,
                   temp_mxopt=runners["mxopt"].temp_bytes,
                   temp_optax=runners["optax"].temp_bytes,
                   passes_mxopt=runners["mxopt"].bytes_accessed / nbytes,
                   passes_optax=runners["optax"].bytes_accessed / nbytes,
                   passes_floor=runners["floor"].bytes_accessed / nbytes,
                   floor_bytes=runners["floor"].bytes_accessed,
                   torch_label=None, torch_fastest_ms=None, torch_median_ms=None)
        del runners, structure
        gc.collect()
        if python and torch_spec:
            label, cls, kwargs = torch_spec
            print(f"[{name}] torch {label}, {args.torch_procs} processes ...", flush=True)
            medians, version = run_torch(python, cls, kwargs, shapes, args)
            if medians:
                row.update(torch_label=f"{label} {version}",
                           torch_fastest_ms=1e3 * min(medians),
                           torch_median_ms=1e3 * statistics.median(medians))
        rows.append(row)
    bandwidth = {k: f.bytes_accessed / statistics.median(f.times) for k, f in floors.items()}
    return tree, len(shapes), sum(int(np.prod(s)) for s in shapes), nbytes, rows, bandwidth


# ---- reporting ------------------------------------------------------------------------

def report(tree, leaves, size, nbytes, rows, bandwidth):
    fmt = common.fmt
    lines = [f"== {tree}", f"   {leaves} leaves, {size:,} float32 parameters "
             f"({nbytes / 1e6:.1f} MB); floor bandwidth "
             + ", ".join(f"{k} state: {b / 1e9:.1f} GB/s" for k, b in sorted(bandwidth.items()))]
    head = (f"{'optimizer':9s} {'mxopt ms':>8s} {'optax ms':>8s} {'torch min/med ms':>16s} "
            f"{'struct ms':>9s} {'floor ms':>8s} {'/optax':>6s} {'/struct':>7s} {'st/fl':>5s} "
            f"{'/floor':>6s} {'bound':>5s} "
            f"{'compile s mx/ox':>15s} {'temp MB mx/ox':>13s} {'passes mx/ox/fl':>15s}")
    lines += [head, "-" * len(head)]
    for r in rows:
        torch = ("-" if r["torch_median_ms"] is None
                 else f"{r['torch_fastest_ms']:.1f}/{r['torch_median_ms']:.1f}")
        bound = r["passes_mxopt"] / r["passes_floor"]
        st = r["structure_ms"]
        lines.append(
            f"{r['name']:9s} {fmt(r['mxopt_ms'], '8.2f')} {fmt(r['optax_ms'], '8.2f')} "
            f"{torch:>16s} {fmt(st, '9.2f')} {fmt(r['floor_ms'], '8.2f')} "
            f"{r['mxopt_ms'] / r['optax_ms']:6.2f} "
            f"{fmt(st and r['mxopt_ms'] / st, '7.2f')} {fmt(st and st / r['floor_ms'], '5.2f')} "
            f"{r['mxopt_ms'] / r['floor_ms']:6.2f} {bound:5.2f} "
            f"{r['compile_mxopt_s']:7.2f}/{r['compile_optax_s']:<7.2f} "
            f"{r['temp_mxopt'] / 1e6:6.1f}/{r['temp_optax'] / 1e6:<6.1f} "
            f"{r['passes_mxopt']:5.1f}/{r['passes_optax']:4.1f}/{r['passes_floor']:4.1f}")
    lines.append("optax column: " + "; ".join(f"{r['name']} = {r['optax_label']}" for r in rows))
    lines.append("torch column: " + "; ".join(f"{r['name']} = {r['torch_label']}" for r in rows
                                              if r["torch_label"]))
    lines.append("issue 17 and 18 targets (ratios from this run):")
    for r in rows:
        vs_optax = r["mxopt_ms"] / r["optax_ms"]
        vs_floor, bound = r["mxopt_ms"] / r["floor_ms"], r["passes_mxopt"] / r["passes_floor"]
        line = (f"  {r['name']:9s} step / optax {vs_optax:.2f} (target <= 1.0): "
                f"{'met' if vs_optax <= 1.0 else 'NOT met'};  step / floor {vs_floor:.2f} "
                f"(bytes bound {bound:.2f}): {'met' if vs_floor <= bound else 'NOT met'};  ")
        if r["structure_ms"] and not common.structure_problems(r["structure_notes"]):
            vs_st = r["mxopt_ms"] / r["structure_ms"]
            line += (f"step / structure {vs_st:.2f} (measured structural bound <= 1.0): "
                     + ("met" if vs_st <= 1.0 else
                        f"NOT met{' (within noise)' if vs_st <= NOISE else ''}"))
        else:
            line += "measured structural bound: no verified structure row"
        lines.append(line)
    lines.append(f"  (noise: interleaved medians here move by a few percent from run to run; "
                 f"'within noise' is mxopt / structure <= {NOISE})")
    lines.append("structure rows (mxopt's loops, trivial arithmetic; checked against mxopt's "
                 "compiled step):")
    for r in rows:
        lines.append(f"  {r['name']:9s} {common.structure_verdict(r['structure_notes'])}")
    return lines


# Ratios of interleaved medians on the shared 2-core machine move by about this
# much from one run to the next.
NOISE = 1.05


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a small tree, 3 steps after 1 warm-up, no torch: a smoke run")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help=f"comma-separated subset of {','.join(OPTIMIZERS)}")
    p.add_argument("--reps", type=int, default=20, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--compile-reps", type=int, default=1,
                   help="timed compilations of each jitted step, in rounds over mxopt's and "
                        "optax's (the fastest is reported)")
    p.add_argument("--no-torch", dest="torch", action="store_false", help="skip torch rows")
    p.add_argument("--torch-python", help="python with torch (default: this one)")
    p.add_argument("--torch-procs", type=int, default=3,
                   help="fresh processes per torch optimizer")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args(argv)
    chosen = [x for x in args.optimizers.split(",") if x]
    bad = [x for x in chosen if x not in OPTIMIZERS]
    if bad:
        p.error(f"--optimizers: unknown {bad}; choose from {list(OPTIMIZERS)}")
    args.optimizers = chosen
    if args.quick:
        args.reps, args.warmup, args.torch = min(args.reps, 3), min(args.warmup, 1), False
    return args


def main(argv=None):
    args = parse_args(argv)
    header = common.machine_lines(None, None)
    print("\n".join(header))
    print(f"reps {args.reps} after {args.warmup} warm-up; torch threads {args.threads}, "
          f"{args.torch_procs} processes per optimizer")
    tree, leaves, size, nbytes, rows, bandwidth = measure(args)
    lines = report(tree, leaves, size, nbytes, rows, bandwidth)
    end = f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    print("\n" + "\n".join(lines) + "\n" + end)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=header, args=vars(args), tree=tree, rows=rows,
                           bandwidth=bandwidth, footer=end), f, indent=1)
    return rows


if __name__ == "__main__":
    main()
