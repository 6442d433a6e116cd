"""Is torch's RMSprop step bimodal, and does the kernel layout matter to it?

A plain script (timings are never asserted). On the benchmark machine the same
ResNet-50 ``torch.optim.RMSprop(foreach=True)`` step took either about 41 ms or
91-100 ms from one process to the next, so a single torch timing, or two taken
minutes apart (one per layout), says little. This script times torch on both
layouts, MXNet's ``(out, in, h, w)`` and Flax's ``(h, w, in, out)``, inside each
of several fresh processes (alternating which layout goes first), and prints
per process the median step time of each layout, then across processes the
fastest and the median of those medians.

    python benchmarks/bench_torch_layouts.py --processes 6 --reps 20

It needs ``torch`` in the interpreter given by ``--python`` (default: this one).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUTS = {"mxnet (out, in, h, w)": "resnet50", "flax (h, w, in, out)": "resnet50_hwio"}


def child(args):
    """One process: both layouts, ``--reps`` timed steps each after warm-up."""
    import torch  # noqa: PLC0415 (only the child needs torch)

    sys.path.insert(0, HERE)
    import bench_rmsprop as bench  # noqa: PLC0415 (for its trees and settings)
    torch.set_num_threads(args.threads)
    order = list(LAYOUTS.items())
    if args.index % 2:
        order.reverse()
    out = {}
    for label, tree in order:
        _, shapes = bench.tree_leaves(tree)
        params_np, grads_np = bench.make_data(shapes, args.seed)
        runner = bench.TorchRunner(args.centered, params_np, grads_np, args.threads)
        for _ in range(args.warmup):
            runner()
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            runner()
            times.append(time.perf_counter() - t0)
        out[label] = 1e3 * statistics.median(times)
        del runner
    print(json.dumps({"torch": torch.__version__, "medians_ms": out}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=6)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--centered", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--python", default=sys.executable, help="an interpreter with torch")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        args.index = args.child
        return child(args)
    per_process, version = [], None
    for i in range(args.processes):
        cmd = [args.python, os.path.abspath(__file__), "--child", str(i),
               "--reps", str(args.reps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        if args.centered:
            cmd.append("--centered")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"process {i} failed:\n{proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        version = res["torch"]
        per_process.append(res["medians_ms"])
        cells = "  ".join(f"{k}: {v:7.2f} ms" for k, v in res["medians_ms"].items())
        print(f"process {i}  {cells}", flush=True)
    print(f"\ntorch {version}, {'centered' if args.centered else 'plain'} RMSprop(foreach), "
          f"{args.threads} threads, {args.processes} processes x {args.reps} steps")
    for label in LAYOUTS:
        values = [m[label] for m in per_process]
        print(f"  {label:24s} fastest {min(values):7.2f} ms   median "
              f"{statistics.median(values):7.2f} ms   slowest {max(values):7.2f} ms")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
