#!/usr/bin/env bash
# One accelerator check, sized for a short device lease (about 8 minutes):
# which golden comparisons hold bit for bit on the accelerator's XLA, and the
# step and compile times of RMSProp and the family on ResNet-50 there.
# Usage (repository root, JAX with the accelerator's plugin installed):
#   OUT=/some/dir bash benchmarks/device_check.sh
# Writes env.txt, exact.txt, bench_rmsprop.txt, bench_family.txt (+ .json) to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
python3 -c "import jax, optax, numpy; print('jax', jax.__version__, 'optax', optax.__version__,
'numpy', numpy.__version__, jax.devices())" 2>&1 | tee "$OUT/env.txt"
# Golden comparisons on the accelerator: a failure here is a place where that
# XLA rounds differently from MXNet's CPU kernels (the README's Numerics section
# states the CPU guarantees).
timeout "${EXACT_S:-200}" python3 -m pytest -q -p no:cacheprovider --tb=no -rf \
  tests/test_alias.py tests/test_family_sgd.py tests/test_family_adam.py \
  tests/test_family_lamb.py -k "jit or chain_agrees or matches" 2>&1 | tail -80 > "$OUT/exact.txt"
echo "exact: exit $?" >> "$OUT/exact.txt"
timeout "${BENCH_S:-120}" python3 benchmarks/bench_rmsprop.py --trees resnet50 \
  --competitors mxopt,mxopt_nocw,optax,optax_all,floor --reps 50 --compile-reps 1 \
  --json "$OUT/bench_rmsprop.json" > "$OUT/bench_rmsprop.txt" 2>&1
echo "bench_rmsprop: exit $?" >> "$OUT/bench_rmsprop.txt"
timeout "${BENCH_S:-120}" python3 benchmarks/bench_family.py --no-torch --reps 50 \
  --compile-reps 1 --json "$OUT/bench_family.json" > "$OUT/bench_family.txt" 2>&1
echo "bench_family: exit $?" >> "$OUT/bench_family.txt"
tail -n 5 "$OUT"/*.txt
