"""benchmarks/bench_clip_weights.py, the evidence for issue 14's open decision
(what exact weight clipping costs). Timings are never asserted; what is checked
is that its contract counter sees each cheaper form's breach, finds none in the
shipped form, and that swapping a form in is undone."""
import os
import sys

import numpy as np

from mxopt import _kernels

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import bench_clip_weights as bench  # noqa: E402

# w + u stays inside [-2, 2] for the first pair, but w + ((w + u) - w) is not
# w + u in float16; the rest leave the interval on either side.
W = np.array([0.104, 1.999, -1.75, 1.5e3, -7.0, 0.3], np.float16)
U = np.array([-1.1045, 0.01, -0.5, np.inf, 5.0, -np.inf], np.float16)


def test_shipped_form_keeps_the_contract():
    ws, us = bench.float16_cases(sample_updates=1)
    for bound in (0.3333, 2.0):
        assert bench.contract_violations(bench.EXACT, bound, ws, us) == (0, 0, 0)


def test_counter_sees_each_cheaper_forms_breach():
    ws, us = bench.float16_cases(sample_updates=1)
    outside, changed, _ = bench.contract_violations(bench.no_step, 2.0, ws, us)
    assert outside > 0 and changed == 0
    outside, changed, _ = bench.contract_violations(bench.clamp_only, 2.0, W, U)
    assert changed == 1
    assert bench.contract_violations(bench.EXACT, 2.0, W, U) == (0, 0, 0)


def test_swapped_form_is_undone():
    with bench.using_form(bench.no_step):
        assert _kernels.clipped_weight_update is bench.no_step
    assert _kernels.clipped_weight_update is bench.EXACT
