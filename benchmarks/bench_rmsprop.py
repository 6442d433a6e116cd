"""How fast is one RMSProp step? mxopt against optax, torch, MXNet 1.9.1 and the floor.

A plain script (not a test: timings are never asserted anywhere). For each tree
of float32 parameters it prints one table, measured in one run, with every
optimizer at its closest settings to MXNet's RMSProp with all options on:

- ``mxopt.rmsprop``: learning-rate schedule, ``wd``, ``rescale_grad``,
  ``clip_gradient``, ``clip_weights``, ``lr_mult`` (2 for biases) and ``wd_mult``
  (MXNet Module's rule: no decay unless a name ends in ``_weight``/``_gamma``);
  both variants.
- ``optax``: the issue's competitor, ``chain(add_decayed_weights(wd),
  rmsprop(schedule, decay=gamma1, eps=epsilon, eps_in_sqrt=True))``, and for the
  centered variant ``rmsprop(..., centered=True, momentum=gamma2)``.
- ``optax_all``: the same with optax's closest pieces for the other options,
  ``chain(scale(rescale_grad), add_decayed_weights(wd, mask=...),
  clip(clip_gradient), rmsprop(...), masked(scale(2), biases))``, with the same
  multipliers as mxopt's (decay masked by MXNet Module's rule, twice the rate
  for biases). Optax has no weight clipping.
- ``torch.optim.RMSprop(foreach=True)`` (when torch is importable), ``alpha=gamma1``,
  ``weight_decay=wd``, centered with ``momentum=gamma2``; torch's step has no
  gradient rescaling, gradient or weight clipping, or schedule.
- MXNet 1.9.1's own ``mx.optimizer.get_updater(mx.optimizer.RMSProp(...))`` with
  the same options and multipliers, run in a side interpreter given with
  ``--mxnet-python`` (never imported here).
- the floor: per leaf ``w + g`` and ``s * 0.9 + g`` for each state buffer (one
  for the plain variant, three for the centered one), jitted with the same
  buffers donated, the weight's loop a fusion (:func:`floor_step`). It reads
  and writes the same arrays as an optimizer step and does trivial arithmetic.
- the structure row (``structure``): mxopt's own compiled step with its
  arithmetic made trivial (``benchmarks/structure.py``). It is read off the
  optimized HLO of ``mxopt.rmsprop``'s step (all options) and has the same
  loops: the same outputs per leaf, each written by a loop reading the same
  parameter-sized arrays (old buffers or other loops' results), with adds and
  multiplies by constants instead of MXNet's arithmetic, and no temporaries.
  Loops reading more input streams move their bytes at a lower bandwidth than
  the floor's two-input loops, so this row, not the floor times the ratio of
  passes, is what pure XLA with this structure reaches here; the table says
  whether its passes and temporary bytes match mxopt's (they must) and how
  many loops XLA split across threads in each;
- "1-D leaves" rows (``floor_1d``, and ``mxopt_1d`` on request): the same step
  on the same data with every leaf reshaped to 1-D before jitting. XLA:CPU's
  loop emitter vectorises only the innermost dimension, so a 3x3 convolution
  kernel ``(out, in, 3, 3)`` runs in scalar code; these rows show how much of a
  step that costs (``--trees resnet50_3x3`` isolates those leaves).

The jitted steps are ``step(params, state, grads) -> (apply_updates(params,
updates), new_state)`` with params and state donated. Each table gives the median
step time over ``--reps`` runs after ``--warmup`` runs (the jitted steps are
interleaved round-robin, so a burst of load hits them alike; torch runs after
them, so that its OpenMP threads and XLA's pool do not compete, and MXNet runs
last in its own process), the ratio mxopt / competitor, the ratio competitor /
floor, the compile time (trace + lower + compile from empty caches, the
fastest of ``--compile-reps`` rounds that compile each jitted step in turn),
XLA's temporary bytes, and "passes": the bytes XLA's cost analysis counts as
read and written, in units of the parameter bytes (5 plain / 9 centered is one
pass over every array).

Examples::

    python benchmarks/bench_rmsprop.py                          # everything available
    python benchmarks/bench_rmsprop.py --trees resnet50 --reps 5 --warmup 1   # quick
    python benchmarks/bench_rmsprop.py --mxnet-python ../mxref/bin/python --json out.json
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # structure.py
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import structure  # noqa: E402

import mxopt  # noqa: E402

# MXNet's RMSProp with every option on.
HP = dict(learning_rate=0.01, decay_steps=10_000, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
          wd=1e-4, rescale_grad=1 / 32, clip_gradient=1.0, clip_weights=2.0)

SMALL_SHAPES = [(64,), (128,), (256,), (512,), (1024,), (16, 16), (32, 32), (3, 3, 16),
                (8, 64), (2048,)]
TREES = {
    "resnet50": "ResNet-50 v1 trainable parameters (benchmarks/resnet50_shapes.json)",
    "big": "one leaf of 64M elements (8192 x 8192)",
    "small": "1,000 small leaves (10 shapes of 64 to 2,048 elements, cycled)",
    "resnet50_hwio": "ResNet-50 v1 with convolution kernels in Flax's (h, w, in, out) layout",
    "resnet50_3x3": "the 16 3x3 convolution kernels of ResNet-50 (a diagnostic subset)",
}
DEFAULT_TREES = ("resnet50", "big", "small")
COMPETITORS = ("mxopt", "mxopt_nocw", "mxopt_1d", "optax", "optax_all", "torch", "mxnet",
               "structure", "floor", "floor_1d")
DEFAULT_COMPETITORS = ("mxopt", "optax", "optax_all", "torch", "mxnet", "structure", "floor",
                       "floor_1d")
VARIANTS = ("plain", "centered")


def tree_leaves(name):
    """(names, shapes): MXNet-style names, so MXNet's Module rule for wd_mult
    (no decay unless the name ends in _weight or _gamma) applies to both."""
    if name in ("resnet50", "resnet50_hwio", "resnet50_3x3"):
        with open(os.path.join(HERE, "resnet50_shapes.json")) as f:
            pairs = json.load(f)["resnet50_v1"]  # MXNet's (out, in, h, w) kernels
        if name == "resnet50_hwio":
            pairs = [(n, [s[2], s[3], s[1], s[0]] if len(s) == 4 else s) for n, s in pairs]
        if name == "resnet50_3x3":
            pairs = [(n, s) for n, s in pairs if len(s) == 4 and s[-2:] == [3, 3]]
        return [n for n, _ in pairs], [tuple(s) for _, s in pairs]
    if name == "big":
        return ["big_weight"], [(8192, 8192)]
    if name == "small":
        shapes = [SMALL_SHAPES[i % len(SMALL_SHAPES)] for i in range(1000)]
        names = [f"p{i:04d}_{'bias' if len(s) == 1 else 'weight'}" for i, s in enumerate(shapes)]
        return names, shapes
    raise ValueError(name)


def lr_mult(name, leaf=None):
    """2x the learning rate for biases (a common MXNet/Caffe setting)."""
    del leaf
    return 2.0 if name.endswith("_bias") else 1.0


def make_data(shapes, seed):
    rng = np.random.default_rng(seed)
    params = [0.05 * rng.standard_normal(s, dtype=np.float32) for s in shapes]
    # With rescale_grad = 1/32 and clip_gradient = 1, a few percent get clipped.
    grads = [8.0 * rng.standard_normal(s, dtype=np.float32) for s in shapes]
    return params, grads


# ---- competitors ----------------------------------------------------------------

def schedule():
    return optax.cosine_decay_schedule(HP["learning_rate"], HP["decay_steps"])


def mxopt_tx(centered, clip_weights=True):
    return mxopt.rmsprop(schedule(), gamma1=HP["gamma1"], gamma2=HP["gamma2"],
                         epsilon=HP["epsilon"], centered=centered,
                         clip_weights=HP["clip_weights"] if clip_weights else None, wd=HP["wd"],
                         rescale_grad=HP["rescale_grad"], clip_gradient=HP["clip_gradient"],
                         lr_mult=lr_mult, wd_mult=mxopt.multipliers.mxnet_module_wd_mult)


def optax_tx(centered, all_options=False):
    rmsprop = optax.rmsprop(schedule(), decay=HP["gamma1"], eps=HP["epsilon"], eps_in_sqrt=True,
                            centered=centered, momentum=HP["gamma2"] if centered else None)
    if not all_options:
        return optax.chain(optax.add_decayed_weights(HP["wd"]), rmsprop)
    # The same multipliers as mxopt's: decay only where MXNet Module's rule
    # decays, and twice the learning rate for biases.
    decayed = lambda p: {n: mxopt.multipliers.mxnet_module_wd_mult(n, x) > 0  # noqa: E731
                         for n, x in p.items()}
    biases = lambda p: {n: lr_mult(n) != 1.0 for n in p}  # noqa: E731
    return optax.chain(optax.scale(HP["rescale_grad"]),
                       optax.add_decayed_weights(HP["wd"], mask=decayed),
                       optax.clip(HP["clip_gradient"]), rmsprop,
                       optax.masked(optax.scale(2.0), biases))


def tx_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return step, tx.init


def floor_step(num_states):
    """Per leaf ``w + g`` and ``s * 0.9 + g`` for each state buffer: the arrays an
    optimizer with ``num_states`` buffers reads and writes, trivial arithmetic.

    The weight's loop adds ``select(g > inf, -g, g)`` (which is ``g``) rather
    than ``g``: XLA:CPU emits a lone ``w + g`` with a serial emitter of its own
    (``mxopt._kernels.own_loop``), which in MXNet's layout made this floor
    slower than mxopt's own loops (21.6 against 11.5 ms plain on ResNet-50; the
    same in Flax's layout, 10.5 ms, measured 2026-12-01)."""
    inf = jnp.float32(jnp.inf)

    def step(params, states, grads):
        params = jax.tree.map(lambda w, g: w + jax.lax.select(g > inf, -g, g), params, grads)
        states = tuple(jax.tree.map(lambda s, g: s * 0.9 + g, s, grads) for s in states)
        return params, states

    def init(params):
        return tuple(jax.tree.map(jnp.zeros_like, params) for _ in range(num_states))
    return step, init


class JaxRunner:
    """A jitted step with params and state donated, compiled from empty caches
    (once here, untimed; :func:`time_compiles` times further compiles)."""

    def __init__(self, make, names, params_np, grads, one_d=False):
        self.step, init = make
        params = {n: jnp.array(a.reshape(-1) if one_d else a)  # copies
                  for n, a in zip(names, params_np)}
        if one_d:
            grads = {n: g.reshape(-1) for n, g in grads.items()}
        self.params, self.state, self.grads = params, init(params), grads
        self.compiled = self._compile()
        self.compile_s = None
        self.temp_bytes = self.compiled.memory_analysis().temp_size_in_bytes
        self.bytes_accessed = structure.bytes_accessed(self.compiled)

    def _compile(self):
        jax.clear_caches()
        return jax.jit(self.step, donate_argnums=(0, 1)).lower(
            self.params, self.state, self.grads).compile()

    def timed_compile(self):
        """Seconds to trace, lower and compile the step from empty caches."""
        gc.collect()  # the garbage of earlier work is not this compile's
        t0 = time.perf_counter()
        self._compile()
        return time.perf_counter() - t0

    def __call__(self):
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))

    def check(self):
        return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(self.params))


def time_compiles(runners, reps):
    """Set each :class:`JaxRunner`'s ``compile_s`` to the fastest of ``reps``
    rounds that compile every runner once in turn, so that a burst of load, or
    a garbage collection, does not land on one runner's compiles alone."""
    times = {key: [] for key in runners}
    for _ in range(reps):
        for key, run in runners.items():
            times[key].append(run.timed_compile())
    for key, run in runners.items():
        run.compile_s = min(times[key])


def structure_runner(reference, init, names, params_np, grads):
    """The structure step of ``reference`` (the optimizer's :class:`JaxRunner`, not
    yet run) as a runner, and what :func:`structure.verify` finds wrong with it;
    ``(None, [why])`` where it cannot be rebuilt."""
    try:
        step = structure.structure_step(reference.compiled.as_text(), reference.params,
                                        reference.state, reference.grads)
        run = JaxRunner((step, init), names, params_np, grads)
    except structure.Unsupported as e:
        return None, [f"not rebuilt: {e}"]
    run.parallel_loops = structure.parallel_loops(run.compiled)
    reference.parallel_loops = structure.parallel_loops(reference.compiled)
    return run, structure.verify(reference.compiled, run.compiled, len(names))


PARALLEL = "parallel loops"  # how parallel_note's notes begin


def parallel_note(run, reference):
    (loops, elements), (ref_loops, ref_elements) = run.parallel_loops, reference.parallel_loops
    return (f"{PARALLEL} {loops} over {elements / 1e6:.2f}M elements (mxopt's "
            f"{ref_loops} over {ref_elements / 1e6:.2f}M)")


def structure_problems(notes):
    """A structure row's notes that say it is not mxopt's structure (the others
    are :func:`parallel_note`'s)."""
    return [n for n in notes if not n.startswith(PARALLEL)]


def structure_verdict(notes):
    """A structure row's notes as one report line: whether it is mxopt's
    structure, then its parallel loops."""
    problems = structure_problems(notes)
    return (("WARNING, not mxopt's structure: " + "; ".join(problems) if problems
             else "same passes and temp bytes as mxopt's step")
            + "".join(f"; {n}" for n in notes if n.startswith(PARALLEL)))


class TorchRunner:
    compile_s = temp_bytes = bytes_accessed = None

    def __init__(self, centered, params_np, grads_np, threads):
        import torch
        torch.set_num_threads(threads)
        self.params = [torch.tensor(a, requires_grad=True) for a in params_np]  # copies
        for p, g in zip(self.params, grads_np):
            p.grad = torch.tensor(g)
        self.opt = torch.optim.RMSprop(
            self.params, lr=HP["learning_rate"], alpha=HP["gamma1"], eps=HP["epsilon"],
            weight_decay=HP["wd"], momentum=HP["gamma2"] if centered else 0.0,
            centered=centered, foreach=True)

    def __call__(self):
        self.opt.step()

    def check(self):
        import torch
        return all(bool(torch.isfinite(p).all()) for p in self.params)


MXNET_SCRIPT = textwrap.dedent(r"""
    import json, sys, time
    import numpy as np
    import mxnet as mx
    cfg = json.load(open(sys.argv[1]))
    hp = cfg["hp"]
    rng = np.random.default_rng(cfg["seed"])
    weights, grads = [], []
    for shape in cfg["shapes"]:
        weights.append(mx.nd.array(0.05 * rng.standard_normal(shape, dtype=np.float32)))
        grads.append(mx.nd.array(8.0 * rng.standard_normal(shape, dtype=np.float32)))
    sched = mx.lr_scheduler.CosineScheduler(max_update=hp["decay_steps"],
                                            base_lr=hp["learning_rate"])
    opt = mx.optimizer.RMSProp(
        learning_rate=hp["learning_rate"], gamma1=hp["gamma1"], gamma2=hp["gamma2"],
        epsilon=hp["epsilon"], centered=cfg["centered"], clip_weights=hp["clip_weights"],
        wd=hp["wd"], rescale_grad=hp["rescale_grad"], clip_gradient=hp["clip_gradient"],
        lr_scheduler=sched, param_idx2name=dict(enumerate(cfg["names"])))
    opt.set_lr_mult(cfg["lr_mult"])  # wd_mult: MXNet's Module rule from the names
    updater = mx.optimizer.get_updater(opt)

    def step():
        for i, (w, g) in enumerate(zip(weights, grads)):
            updater(i, g, w)
        mx.nd.waitall()

    for _ in range(cfg["warmup"]):
        step()
    times = []
    for _ in range(cfg["reps"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    ok = all(bool(np.isfinite(w.asnumpy()).all()) for w in weights)
    print(json.dumps({"times": times, "version": mx.__version__, "finite": ok}))
""")


def run_mxnet(python, names, shapes, centered, args):
    cfg = dict(hp=HP, seed=args.seed, shapes=[list(s) for s in shapes], centered=centered,
               warmup=args.warmup, reps=args.reps, names=names,
               lr_mult={n: lr_mult(n) for n in names if lr_mult(n) != 1.0})
    with tempfile.TemporaryDirectory() as tmp:  # not the mxnet package directory
        script, cfg_path = os.path.join(tmp, "mx_rmsprop.py"), os.path.join(tmp, "cfg.json")
        with open(script, "w") as f:
            f.write(MXNET_SCRIPT)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        proc = subprocess.run([python, script, cfg_path], cwd=tmp, env=env,
                              capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"    MXNet run failed:\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- reporting ------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(torch_version, mxnet_version):
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    lines = [
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {cpu_model()}, {cores} logical cores ({usable} usable), "
        f"{platform.system()} {platform.release()}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {jax.lib.__version__}, optax {optax.__version__}, numpy {np.__version__}, "
        f"mxopt {mxopt.__version__}, torch {torch_version or '-'}, MXNet {mxnet_version or '-'}",
        f"jax backend: {jax.default_backend()} {jax.devices()[0].device_kind}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')}",
    ]
    return lines


def fmt(x, spec):
    width = int(spec.split(".")[0]) if spec[0].isdigit() else 0
    return "-".rjust(width) if x is None else format(x, spec)


def print_table(tree, shapes, rows, nbytes):
    n = sum(math.prod(s) for s in shapes)
    print(f"\n== {tree}: {TREES[tree]}\n   {len(shapes)} leaves, {n:,} float32 parameters "
          f"({nbytes / 1e6:.1f} MB)")
    head = (f"{'variant':9s} {'implementation':44s} {'median ms':>9s} {'p25-p75 ms':>13s} "
            f"{'min ms':>7s} {'mxopt/this':>10s} {'this/floor':>10s} {'compile s':>9s} "
            f"{'temp MB':>8s} {'passes':>6s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = vs_floor = None
        ref = next((x for x in rows if x["variant"] == r["variant"] and x["key"] == "mxopt"), None)
        floor = next((x for x in rows if x["variant"] == r["variant"] and x["key"] == "floor"),
                     None)
        if ref and r["median_ms"]:
            ratio = ref["median_ms"] / r["median_ms"]
        if floor and floor["median_ms"] and r["median_ms"]:
            vs_floor = r["median_ms"] / floor["median_ms"]
        iqr = f"{r['p25_ms']:.1f}-{r['p75_ms']:.1f}" if r["median_ms"] else "-"
        low = 1e3 * min(r["times_s"]) if r["times_s"] else None
        passes = r["bytes_accessed"] / nbytes if r["bytes_accessed"] else None
        temp = r["temp_bytes"] / 1e6 if r["temp_bytes"] is not None else None
        print(f"{r['variant']:9s} {r['label']:44s} {fmt(r['median_ms'], '9.2f')} {iqr:>13s} "
              f"{fmt(low, '7.2f')} {fmt(ratio, '10.2f')} {fmt(vs_floor, '10.2f')} "
              f"{fmt(r['compile_s'], '9.2f')} {fmt(temp, '8.2f')} {fmt(passes, '6.1f')}")
    for r in rows:
        if r.get("key") == "structure":
            print(f"  {r['variant']} structure row: {structure_verdict(r['notes'])}")


# Issue 14's targets. Step time on the ResNet-50 tree in Flax's layout: XLA:CPU
# writes each output with its own loop, so pure XLA cannot go below 8/6
# (plain) and 17/12 (centered) of the floor's traffic, and the structure row
# measures what it reaches with mxopt's loops (more streams per loop, lower
# bandwidth).
STEP_TARGETS = {"plain": 1.4, "centered": 1.5}
# Compile time against optax's closest chain with the same options: at most
# optax's without clip_weights, at most 1.25x with it (optax has none).
COMPILE_TARGETS = (("mxopt_nocw", 1.0), ("mxopt", 1.25))


def targets(tree, rows):
    """Issue 14's targets, as ratios from this run: compile time on the ResNet-50
    trees and the 1,000-leaf one, step time in Flax's layout. A ratio meets its
    target as printed (to two decimals)."""
    out = []
    for variant in VARIANTS:
        get = {r["key"]: r for r in rows if r["variant"] == variant}
        optax_all = get.get("optax_all")
        for key, limit in COMPILE_TARGETS:
            mine = get.get(key)
            if mine and optax_all and mine["compile_s"] and optax_all["compile_s"]:
                ratio = round(mine["compile_s"] / optax_all["compile_s"], 2)
                out.append(f"  {variant:8s} compile {key:10s} {mine['compile_s']:.2f} s / "
                           f"optax_all {optax_all['compile_s']:.2f} s = {ratio:.2f} "
                           f"(target <= {limit}): "
                           f"{'met' if ratio <= limit else 'NOT met'}")
        mx, floor = get.get("mxopt"), get.get("floor")
        if tree == "resnet50_hwio" and mx and floor and floor["median_ms"]:
            ratio = round(mx["median_ms"] / floor["median_ms"], 2)
            limit = STEP_TARGETS[variant]
            line = (f"  {variant:8s} step mxopt/floor = {ratio:.2f} (target <= {limit}): "
                    f"{'met' if ratio <= limit else 'NOT met'}")
            st = get.get("structure")
            if st and st["median_ms"]:
                warn = structure_problems(st["notes"])
                line += (f"; pure XLA with mxopt's loops here: structure/floor = "
                         f"{st['median_ms'] / floor['median_ms']:.2f}, mxopt/structure = "
                         f"{mx['median_ms'] / st['median_ms']:.2f}"
                         + (" (structure row NOT verified)" if warn else ""))
            out.append(line)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", default=",".join(DEFAULT_TREES),
                   help=f"comma-separated subset of {','.join(TREES)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help="plain,centered")
    p.add_argument("--competitors", default=",".join(DEFAULT_COMPETITORS),
                   help=f"comma-separated subset of {','.join(COMPETITORS)} (mxnet needs "
                        "--mxnet-python; torch is skipped when not importable; mxopt_nocw "
                        "is mxopt with clip_weights off; *_1d run on the same leaves "
                        "reshaped to 1-D)")
    p.add_argument("--reps", type=int, default=20, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--compile-reps", type=int, default=1,
                   help="timed compilations per jitted step, in rounds over the steps "
                        "(the fastest is reported)")
    p.add_argument("--threads", type=int, default=2, help="torch and MXNet (OMP) threads")
    p.add_argument("--mxnet-python", help="python of a side venv with mxnet==1.9.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args(argv)
    for name, allowed in (("trees", TREES), ("variants", VARIANTS),
                          ("competitors", COMPETITORS)):
        chosen = [x for x in getattr(args, name).split(",") if x]
        bad = [x for x in chosen if x not in allowed]
        if bad:
            p.error(f"--{name}: unknown {bad}; choose from {list(allowed)}")
        setattr(args, name, chosen)
    return args


def main(argv=None):
    args = parse_args(argv)
    competitors = list(args.competitors)
    torch_version = None
    if "torch" in competitors:
        try:
            import torch
            torch_version = torch.__version__
        except ImportError:
            print("torch is not importable: skipping it")
            competitors.remove("torch")
    if "mxnet" in competitors and not args.mxnet_python:
        competitors.remove("mxnet")
    mxnet_version = None
    if "mxnet" in competitors:
        proc = subprocess.run([args.mxnet_python, "-c", "import mxnet; print(mxnet.__version__)"],
                              capture_output=True, text=True, cwd=tempfile.gettempdir())
        mxnet_version = proc.stdout.strip() or None
        if proc.returncode != 0:
            print(f"MXNet is not importable with {args.mxnet_python}: skipping it")
            competitors.remove("mxnet")

    header = machine_lines(torch_version, mxnet_version)
    print("\n".join(header))
    print(f"settings: {json.dumps(HP)}; reps {args.reps} after {args.warmup} warm-up; "
          f"torch/MXNet threads {args.threads}")
    report = dict(header=header, hp=HP, args=vars(args), trees={})

    for tree in args.trees:
        names, shapes = tree_leaves(tree)
        params_np, grads_np = make_data(shapes, args.seed)
        nbytes = sum(a.nbytes for a in params_np)
        grads = {n: jnp.array(g) for n, g in zip(names, grads_np)}
        rows = []
        for variant in args.variants:
            centered = variant == "centered"
            labels = {
                "mxopt": "mxopt.rmsprop (all options)",
                "mxopt_nocw": "mxopt.rmsprop (all but clip_weights)",
                "optax": "optax decay+rmsprop" + (" centered+mom" if centered else ""),
                "optax_all": "optax scale+decay+clip+rmsprop" + (" c+mom" if centered else ""),
                "torch": "torch RMSprop(foreach)" + (" centered+mom" if centered else ""),
                "mxnet": "MXNet 1.9.1 Updater " + ("rmspropalex" if centered else "rmsprop"),
                "structure": "structure: mxopt's loops, trivial math",
                "floor": f"floor: w+g, s*0.9+g ({3 if centered else 1} state)",
                "mxopt_1d": "mxopt.rmsprop (all options), 1-D leaves",
                "floor_1d": "floor, 1-D leaves",
            }
            runners, notes = {}, {}
            # The structure step is read off mxopt's compiled step: set up last.
            for key in sorted(competitors, key=lambda k: k == "structure"):
                if key == "mxnet":
                    continue
                print(f"[{tree}/{variant}] setting up {key} ...", flush=True)
                if key == "mxopt":
                    runners[key] = JaxRunner(tx_step(mxopt_tx(centered)), names, params_np,
                                             grads)
                elif key == "mxopt_1d":
                    runners[key] = JaxRunner(tx_step(mxopt_tx(centered)), names, params_np,
                                             grads, one_d=True)
                elif key == "mxopt_nocw":
                    runners[key] = JaxRunner(tx_step(mxopt_tx(centered, clip_weights=False)),
                                             names, params_np, grads)
                elif key in ("optax", "optax_all"):
                    runners[key] = JaxRunner(tx_step(optax_tx(centered, key == "optax_all")),
                                             names, params_np, grads)
                elif key in ("floor", "floor_1d"):
                    runners[key] = JaxRunner(floor_step(3 if centered else 1), names,
                                             params_np, grads, one_d=key == "floor_1d")
                elif key == "torch":
                    runners[key] = TorchRunner(centered, params_np, grads_np, args.threads)
                elif key == "structure":
                    mx = runners.get("mxopt") or JaxRunner(tx_step(mxopt_tx(centered)), names,
                                                           params_np, grads)
                    run, notes[key] = structure_runner(mx, mxopt_tx(centered).init, names,
                                                       params_np, grads)
                    if run is None:
                        rows.append(dict(variant=variant, key=key, label=labels[key],
                                         times_s=[], compile_s=None, temp_bytes=None,
                                         bytes_accessed=None, notes=notes[key]))
                    else:
                        runners[key] = run
                        notes[key] += [parallel_note(run, mx)]
            time_compiles({k: run for k, run in runners.items() if isinstance(run, JaxRunner)},
                          args.compile_reps)
            # The jitted steps interleaved round-robin (a burst of load hits them
            # alike); torch on its own afterwards, since its OpenMP threads and
            # XLA's pool would otherwise compete for the same cores.
            times = {key: [] for key in runners}
            groups = [[k for k in runners if k != "torch"], [k for k in runners if k == "torch"]]
            for group in groups:
                if not group:
                    continue
                time.sleep(0.5)  # let the other group's threads go idle
                for _ in range(args.warmup):
                    for key in group:
                        runners[key]()
                for _ in range(args.reps):
                    for key in group:
                        t0 = time.perf_counter()
                        runners[key]()
                        times[key].append(time.perf_counter() - t0)
            for key, run in runners.items():
                if not run.check():
                    print(f"    warning: {key} produced non-finite weights")
                rows.append(dict(variant=variant, key=key, label=labels[key],
                                 times_s=times[key], compile_s=run.compile_s,
                                 temp_bytes=run.temp_bytes, bytes_accessed=run.bytes_accessed,
                                 notes=notes.get(key, [])))
            del runners
            gc.collect()
            if "mxnet" in competitors:
                print(f"[{tree}/{variant}] running MXNet ...", flush=True)
                res = run_mxnet(args.mxnet_python, names, shapes, centered, args)
                if res:
                    if not res["finite"]:
                        print("    warning: MXNet produced non-finite weights")
                    rows.append(dict(variant=variant, key="mxnet", label=labels["mxnet"],
                                     times_s=res["times"], compile_s=None, temp_bytes=None,
                                     bytes_accessed=None))
        for r in rows:
            t = sorted(r["times_s"])
            r["median_ms"] = 1e3 * statistics.median(t) if t else None
            r["p25_ms"] = 1e3 * float(np.percentile(t, 25)) if t else None
            r["p75_ms"] = 1e3 * float(np.percentile(t, 75)) if t else None
        order = {k: i for i, k in enumerate(COMPETITORS)}
        rows.sort(key=lambda r: (VARIANTS.index(r["variant"]), order[r["key"]]))
        print_table(tree, shapes, rows, nbytes)
        lines = targets(tree, rows) if tree.startswith("resnet50") or tree == "small" else []
        if lines:
            print(f"issue 14 targets ({tree}, ratios from this run):")
            print("\n".join(lines))
        report["trees"][tree] = dict(leaves=len(shapes), param_bytes=nbytes, rows=rows,
                                     targets=lines)
        del grads
        gc.collect()

    end = f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    print("\n" + end)
    report["footer"] = end
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
