"""Orbax: a run checkpointed mid-way, restored in a fresh process and continued
ends bit-identical (params and optimizer state) to the uninterrupted run, for
both variants of mxopt.rmsprop and for inject_hyperparams' state with a learning
rate changed in the state by the training loop (examples/checkpoint_resume.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("plain", "centered", "injected", "multi_precision")
STOP_AT, SAVE_EVERY = 110, 25  # 42 steps per epoch: the checkpoint (100) is mid-epoch

# Run in a fresh interpreter: import the example, run it, dump the final state.
DRIVER = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {examples!r})
import checkpoint_resume as ex
for job in json.loads(sys.argv[1]):
    state = ex.train(job["ckpt"], job["variant"], epochs=3, stop_at=job.get("stop_at"),
                     save_every={save_every}, quiet=False)
    leaves, treedef = jax.tree.flatten((state.params, state.opt_state))
    np.savez(job["out"], *[np.asarray(x) for x in leaves])
    print("TREE", job["variant"], treedef)
    print("STEP", job["variant"], int(state.step), ex.fingerprint(state))
"""


def run_fresh_process(jobs):
    code = DRIVER.format(examples=os.path.join(ROOT, "examples"), save_every=SAVE_EVERY)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(jobs)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def load(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("orbax")
    first = [job for v in VARIANTS for job in (
        {"variant": v, "ckpt": str(tmp / f"full-{v}"), "out": str(tmp / f"full-{v}.npz")},
        {"variant": v, "ckpt": str(tmp / f"part-{v}"), "out": str(tmp / f"stopped-{v}.npz"),
         "stop_at": STOP_AT})]
    out1 = run_fresh_process(first)
    second = [{"variant": v, "ckpt": str(tmp / f"part-{v}"), "out": str(tmp / f"resumed-{v}.npz")}
              for v in VARIANTS]
    out2 = run_fresh_process(second)
    return tmp, out1, out2


@pytest.mark.parametrize("variant", VARIANTS)
def test_resumed_run_is_bit_identical(runs, variant):
    tmp, out1, out2 = runs
    assert f"resumed from step 100 in {tmp / f'part-{variant}'}" in out2
    full, stopped, resumed = (load(tmp / f"{k}-{variant}.npz")
                              for k in ("full", "stopped", "resumed"))
    assert len(full) == len(resumed) == len(stopped)
    trees = [line for line in (out1 + out2).splitlines() if line.startswith(f"TREE {variant} ")]
    assert len(trees) == 3 and len(set(trees)) == 1  # same structure, NamedTuples included
    name = {"plain": "RMSPropState", "centered": "CenteredRMSPropState",
            "injected": "InjectStatefulHyperparamsState",
            "multi_precision": "MasterWeightsState"}[variant]
    assert name in trees[0]
    for a, b in zip(full, resumed):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # bit for bit (NaN-free floats)
        assert a.tobytes() == b.tobytes()
    # The interrupted run had really stopped short of the end.
    assert any(not np.array_equal(a, b) for a, b in zip(full, stopped))
    steps = {line.split()[3] for line in (out1 + out2).splitlines()
             if line.startswith(f"STEP {variant} 126 ")}
    assert len(steps) == 1  # full and resumed print the same fingerprint


def test_injected_learning_rate_comes_from_the_checkpoint(runs):
    """The loop lowers the injected learning rate at steps 42 and 84, so the
    checkpoint (step 100) holds 2e-3 * 0.7**2, not the constructor's 2e-3, and
    nothing resets it before step 126: the resumed run can only match the
    uninterrupted one (previous test) by taking it from the checkpoint."""
    tmp, _, _ = runs
    for kind in ("stopped", "resumed", "full"):
        scalars = [x for x in load(tmp / f"{kind}-injected.npz")
                   if x.shape == () and x.dtype == np.float32]
        assert any(np.isclose(x, 2e-3 * 0.7 * 0.7, rtol=1e-6) for x in scalars), kind
        assert not any(np.isclose(x, 2e-3, rtol=1e-6) for x in scalars), kind


def test_ctrl_c_stops_cleanly_and_says_where_a_rerun_resumes(tmp_path):
    """A real SIGINT mid-training: no traceback, the checkpoint in flight finished,
    no temporary directory left, one line naming the step a rerun resumes from, and
    a rerun does resume there."""
    import re
    import signal
    import time

    ckpt = tmp_path / "ckpt"
    script = os.path.join(ROOT, "examples", "checkpoint_resume.py")
    proc = subprocess.Popen([sys.executable, "-u", script, "--ckpt-dir", str(ckpt),
                             "--variant", "plain", "--epochs", "1000", "--save-every", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        first = proc.stdout.readline()  # the first epoch's line: training is under way
        assert first.startswith("step "), first + proc.stderr.read()
        assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "futures" not in err, err
    lines = [line for line in out.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, out
    resume = int(re.fullmatch(r"interrupted after step (\d+): run the same command again to "
                              r"resume from step (\d+)", lines[0]).group(2))
    assert resume >= 40 and resume % 5 == 0
    left = sorted(p.name for p in ckpt.iterdir())
    assert str(resume) in left and not any("tmp" in name for name in left), left
    rerun = subprocess.run([sys.executable, script, "--ckpt-dir", str(ckpt), "--variant",
                            "plain", "--epochs", "1000", "--save-every", "5", "--stop-at",
                            str(resume + 1)], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resumed from step {resume} in {ckpt}" in rerun.stdout
