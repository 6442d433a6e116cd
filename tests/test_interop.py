"""mxopt.interop against MXNet 1.9.1 checkpoints (tests/golden/interop, written by
tools/make_golden_interop.py), without MXNet: reading, writing, safety, and
continuing MXNet's runs in JAX."""
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mxopt
from mxopt import _mxformat
from mxopt import interop as I
from tests.conftest import GOLDEN_DIR

G = os.path.join(GOLDEN_DIR, "interop")
RTOL, ATOL = 1e-5, 1e-6
CONFIGS = ("plain", "centered_lr_mult", "factor_scheduler", "float16_multi_precision")


def golden(name):
    return os.path.join(G, name)


def read(name):
    with open(golden(name), "rb") as f:
        return f.read()


class Run:
    """One golden run: checkpoint files plus what MXNet did after them."""

    def __init__(self, name):
        self.name = name
        self.z = np.load(golden(f"{name}.npz"))
        self.meta = json.loads(str(self.z["meta"]))
        self.params = I.load_params(golden(f"{name}.params"))
        self.ckpt = I.load_states(golden(f"{name}.states"))
        self.index_map = I.trainer_index_map(self.meta["full_names"],
                                             structural_names=list(self.params))
        self.trainable = {k: v for k, v in self.params.items() if "running_" not in k}
        self.index_of = {v: k for k, v in self.index_map.items()}

    def grads(self, step, names):
        return {k: self.z[f"grad/{step}/{k}"] for k in names}


_RUNS = {}


def run_of(name):
    if name not in _RUNS:
        _RUNS[name] = Run(name)
    return _RUNS[name]


def factor_schedule_from_record(sched, first_update, steps):
    """MXNet's FactorScheduler.__call__, replayed from the record's fields (Python
    floats, like MXNet), for the updates first_update, first_update + 1, ..."""
    base, count = sched["base_lr"], sched["count"]
    out = []
    for num_update in range(first_update, first_update + steps):
        assert num_update >= sched["warmup_steps"]
        while num_update > count + sched["step"]:
            count += sched["step"]
            base *= sched["factor"]
            base = max(base, sched["stop_factor_lr"])
        out.append(base)
    return out


def continue_in_jax(run, jit, names=None, param_lr_mult=None):
    """Resume the golden checkpoint with mxopt.rmsprop and apply MXNet's gradients."""
    names = list(run.trainable) if names is None else names
    sub = {k: run.trainable[k] for k in names}
    # A saved lr_scheduler is rebuilt as an mxopt.lr_scheduler scheduler.
    resumed = I.resume_rmsprop(run.ckpt, sub, run.index_map,
                               param_lr_mult=param_lr_mult,
                               allow_unused=len(names) < len(run.trainable))
    tx = mxopt.rmsprop(**resumed.kwargs)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step) if jit else step
    params, state = resumed.params, resumed.state
    for t in range(run.meta["steps_after"]):
        grads = {k: jnp.asarray(g).astype(params[k].dtype)  # multi_precision: grad -> float32
                 for k, g in run.grads(t, names).items()}
        params, state = step(params, state, grads)
    return resumed, params, state


# --------------------------------------------------------------------------------------
# .params files
# --------------------------------------------------------------------------------------

def test_reads_every_dtype_exactly():
    expected = np.load(golden("params_expected.npz"))
    got = I.load_params(golden("dtypes.params"))
    want = {k.split("/", 1)[1]: expected[k] for k in expected.files if k.startswith("dtypes/")}
    assert list(got) == list(want)  # the file's order
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
        assert got[k].flags.writeable and got[k].flags.c_contiguous
    assert got["empty"].shape == (0,) and got["int64"][0] == 2 ** 40 + 3


def test_reads_list_files_with_numbered_keys():
    expected = np.load(golden("params_expected.npz"))
    got = I.load_params(golden("list.params"))
    assert list(got) == ["0", "1", "2"]
    for i in range(3):
        chex.assert_trees_all_equal(got[str(i)], expected[f"list/{i}"])
        assert got[str(i)].dtype == expected[f"list/{i}"].dtype


def test_reads_numpy_shape_files_with_0d_and_empty_arrays():
    expected = np.load(golden("params_expected.npz"))
    got = I.load_params(golden("np_shape.params"))
    assert got["scalar"].shape == () and got["scalar"] == np.float32(3.5)
    assert got["zero_rows"].shape == (0, 3) and got["zero_rows"].dtype == np.float64
    np.testing.assert_array_equal(got["vector"], expected["np_shape/vector"])


def test_save_parameters_and_export_names():
    run = run_of("plain")
    assert list(run.params) == run.meta["structural_names"]
    exported = I.load_params(golden("export-0000.params"))
    names = I.export_param_names(exported)
    assert names == run.meta["full_names"]
    args, auxs = I.split_export(exported)
    assert sorted(auxs) == ["net_bn_running_mean", "net_bn_running_var"]
    assert len(args) == 6
    # The export was taken from the same net after the run: its weights are MXNet's
    # final weights, named by full name instead of structural name.
    for full, structural in zip(names, run.meta["structural_names"]):
        value = args.get(full, auxs.get(full))
        np.testing.assert_array_equal(value, run.z[f"final/{structural}"], err_msg=full)
    with pytest.raises(ValueError, match="'0.weight' is not an export key"):
        I.split_export(run.params)


def test_writer_is_byte_identical_to_mxnet():
    expected = np.load(golden("params_expected.npz"))
    dtypes = {k.split("/", 1)[1]: expected[k] for k in expected.files if k.startswith("dtypes/")}
    assert I.dumps_params(dtypes) == read("dtypes.params")
    assert I.dumps_params([expected[f"list/{i}"] for i in range(3)]) == read("list.params")
    np_shape = {k.split("/", 1)[1]: expected[k] for k in expected.files
                if k.startswith("np_shape/")}
    assert I.dumps_params(np_shape, np_shape=True) == read("np_shape.params")
    # JAX arrays and big-endian NumPy arrays write the same bytes.
    as_jax = {k: jnp.asarray(v) for k, v in dtypes.items()}
    as_jax["float64"] = dtypes["float64"].astype(">f8")
    assert I.dumps_params(as_jax) == read("dtypes.params")


def test_save_params_round_trip_and_atomic(tmp_path):
    path = tmp_path / "w.params"
    arrays = {"a": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3),
              "b": np.array([True, False]), "c": np.zeros((0, 2), np.int8)}
    I.save_params(path, arrays)
    back = I.load_params(path)
    assert list(back) == ["a", "b", "c"]
    chex.assert_trees_all_equal(back, {k: np.asarray(v) for k, v in arrays.items()})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="array 'z' has dtype complex64"):
        I.save_params(path, {"a": np.ones(2, np.float32), "z": np.ones(2, np.complex64)})
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["w.params"]  # no temporary files left


@pytest.mark.parametrize("arrays, np_shape, error, match", [
    ({"s": np.float32(1.0)}, False, ValueError, "array 's' is 0-d.*np_shape=True"),
    ({"i": np.ones(2, np.int16)}, False, TypeError, "array 'i' has dtype int16"),
    ({"b": jnp.ones(2, jnp.bfloat16)}, False, TypeError, "array 'b' has dtype bfloat16"),
    ({1: np.ones(2)}, False, TypeError, "names must be str"),
    (np.ones(3), False, TypeError, "dict of name -> array or a list"),
    ([np.ones(2)], "yes", TypeError, "np_shape must be a bool"),
])
def test_writer_rejects_what_mxnet_cannot_hold(arrays, np_shape, error, match):
    with pytest.raises(error, match=match):
        I.dumps_params(arrays, np_shape=np_shape)


@pytest.mark.parametrize("name, match", [
    ("row_sparse.params", "array 0 has row_sparse storage; mxopt reads dense arrays only"),
    ("csr.params", "array 0 has csr storage"),
])
def test_sparse_files_are_refused(name, match):
    with pytest.raises(I.MXNetFormatError, match=match) as info:
        I.load_params(golden(name))
    assert name in str(info.value)


def _one_array_file(magic=_mxformat.V2_MAGIC, stype=0, shape=(2,), dev=1, flag=0, data=None,
                    names=(b"w",), count=1, header=0x112):
    body = struct.pack("<Iii", magic, stype, len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
    body += struct.pack("<iii", dev, 0, flag)
    body += data if data is not None else b"\x00" * 8
    tail = struct.pack("<Q", len(names)) + b"".join(struct.pack("<Q", len(n)) + n for n in names)
    return struct.pack("<QQQ", header, 0, count) + body + tail


@pytest.mark.parametrize("data, match", [
    (_one_array_file(header=0x113), r"not an MXNet NDArray file: header 0x113"),
    (b"PK\x03\x04" + b"\x00" * 40, r"not an MXNet NDArray file"),
    (_one_array_file(magic=0xF993FAC8), r"magic 0xf993fac8 is the pre-1.0 format v1"),
    (_one_array_file(magic=0xDEADBEEF), r"array 0 at offset 24: magic 0xdeadbeef is not an"),
    (_one_array_file(stype=7), r"unknown \(7\) storage"),
    (_one_array_file(flag=12), r"dtype flag 12: bfloat16, which mxopt does not read"),
    (_one_array_file(flag=99), r"dtype flag 99: unknown"),
    (_one_array_file(dev=9), r"unknown device type 9"),
    (_one_array_file(shape=()), r"ndim 0 outside numpy-shape semantics"),
    (_one_array_file(shape=(2, -1)), r"negative or unknown dimension"),
    (_one_array_file(shape=(2 ** 40, 2 ** 20)), r"truncated: array 0: data of shape"),
    (_one_array_file(shape=(0, 2 ** 62)), r"claims shape \(0, 4611686018427387904\), too large"),
    (_one_array_file(count=2 ** 60), r"claims 1152921504606846976 arrays"),
    (_one_array_file(names=(b"a", b"b")), r"corrupt: 2 names for 1 arrays"),
    (_one_array_file(names=(b"\xff",)), r"name 0 is not valid UTF-8"),
    (_one_array_file() + b"\x00", r"1 unexpected bytes after the last name"),
    (_one_array_file(magic=_mxformat.V3_MAGIC, shape=(-1,)), r"negative or unknown dimension"),
])
def test_corrupt_files_fail_clearly(data, match):
    with pytest.raises(I.MXNetFormatError, match=match) as info:
        I.loads_params(data, "ckpt.params")
    assert str(info.value).startswith("ckpt.params: ")


def test_duplicate_names_are_refused():
    one = I.dumps_params({"w": np.ones(2, np.float32)})
    # Two arrays, two names, both "w".
    body = one[24:-(8 + 8 + 1)]
    data = struct.pack("<QQQ", 0x112, 0, 2) + body + body + struct.pack("<Q", 2) + \
        (struct.pack("<Q", 1) + b"w") * 2
    with pytest.raises(I.MXNetFormatError, match="the name 'w' appears twice"):
        I.loads_params(data)


def test_every_truncation_fails_clearly():
    data = read("dtypes.params")
    for n in range(len(data)):
        with pytest.raises(I.MXNetFormatError):
            I.loads_params(data[:n], "cut")


@pytest.mark.parametrize("shape, match", [
    ((2 ** 20, 2 ** 20), "truncated: array 0: data of shape"),  # 4 TiB claimed, 8 bytes there
    ((2 ** 31, 2 ** 31, 4), "too large for any array"),
])
def test_lying_shape_allocates_nothing(shape, match):
    data = _one_array_file(shape=shape)
    tracemalloc.start()
    try:
        with pytest.raises(I.MXNetFormatError, match=match):
            I.loads_params(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_load_params_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.params"):
        I.load_params(tmp_path / "nope.params")
    with pytest.raises(TypeError, match="path must be a path"):
        I.load_params(read("list.params"))


_FUZZ_FILES = ["dtypes.params", "list.params", "np_shape.params", "export-0000.params",
               "plain.states", "float16_multi_precision.states", "np_shape.states",
               "numpy_scalars.states", "factor_scheduler.nooptim.states",
               # protocol 3, without frames: mutations reach deeper into the opcodes
               "plain.mxopt.states", "float16_multi_precision.mxopt.states"]
_FUZZ_DATA = {name: read(name) for name in _FUZZ_FILES}


@st.composite
def mutated_files(draw):
    name = draw(st.sampled_from(_FUZZ_FILES))
    data = bytearray(_FUZZ_DATA[name])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "delete", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return name, bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_fuzz_mutated_files_load_or_fail_clearly(case):
    name, data = case
    try:
        if name.endswith(".params"):
            out = I.loads_params(data, name)
            assert all(isinstance(v, np.ndarray) for v in out.values())
        else:
            out = I.loads_states(data, name)
            assert isinstance(out, I.MXNetStates)
    except I.MXNetFormatError as e:
        assert str(e).startswith(f"{name}: ")


# --------------------------------------------------------------------------------------
# .states files
# --------------------------------------------------------------------------------------

def test_reads_trainer_states_and_optimizer():
    run = run_of("plain")
    opt = run.ckpt.optimizer
    assert opt.cls == "mxnet.optimizer.optimizer.RMSProp" and opt.name == "RMSProp"
    cfg = run.meta["config"]["opt"]
    assert opt["lr"] == cfg["learning_rate"] and opt["wd"] == cfg["wd"]
    assert opt["clip_gradient"] == cfg["clip_gradient"] and opt["centered"] is False
    assert opt["rescale_grad"] == cfg["rescale_grad"] / run.meta["batch"]  # set by step()
    assert opt["num_update"] == run.meta["steps_before"]
    trained = [i for i, n in run.index_map.items() if "running_" not in n]
    assert opt["_index_update_count"] == {i: run.meta["steps_before"] for i in trained}
    assert opt["_all_index_update_counts"] == {0: opt["_index_update_count"]}
    assert opt["lr_scheduler"] is None and opt["idx2name"] == {} and opt["lr_mult"] == {}
    assert "param_dict" not in opt.fields  # MXNet does not pickle it
    # Indices follow the sorted full names; BatchNorm's running stats (2, 3) have none.
    assert list(run.ckpt.states) == trained == [0, 1, 4, 5, 6, 7]
    for idx, state in run.ckpt.states.items():
        (n,) = state
        assert n.shape == run.params[run.index_map[idx]].shape and n.dtype == np.float32


def test_reads_scheduler_fields():
    run = run_of("factor_scheduler")
    sched = run.ckpt.optimizer["lr_scheduler"]
    assert isinstance(sched, I.MXNetObject) and sched.cls == "mxnet.lr_scheduler.FactorScheduler"
    cfg = run.meta["config"]
    assert sched["step"] == cfg["scheduler"]["step"] and sched["factor"] == 0.7
    assert sched["stop_factor_lr"] == 1e-8 and sched["warmup_steps"] == 0
    assert sched["warmup_mode"] == "linear" and sched["warmup_final_lr"] == 0.02
    # The scheduler is stateful: at the checkpoint (5 updates) it decayed once.
    assert sched["count"] == 3 and sched["base_lr"] == 0.02 * 0.7
    # Its fields are all it takes to replay MXNet's learning rates.
    assert factor_schedule_from_record(sched, run.meta["steps_before"] + 1,
                                       run.meta["steps_after"]) == run.meta["learning_rates"]


def test_states_without_optimizer():
    run = run_of("factor_scheduler")
    only = I.load_states(golden("factor_scheduler.nooptim.states"))
    assert only.optimizer is None and list(only.states) == list(run.ckpt.states)
    chex.assert_trees_all_equal(dict(only.states), dict(run.ckpt.states))


def test_multi_precision_states():
    run = run_of("float16_multi_precision")
    assert run.ckpt.optimizer["multi_precision"] is True
    for idx, (master, (n,)) in run.ckpt.states.items():
        weight = run.params[run.index_map[idx]]
        assert weight.dtype == np.float16 and master.dtype == n.dtype == np.float32
        np.testing.assert_array_equal(master.astype(np.float16), weight)


def test_numpy_scalar_hyperparameters():
    ckpt = I.load_states(golden("numpy_scalars.states"))
    opt = ckpt.optimizer
    assert type(opt["lr"]) is np.float32 and opt["lr"] == np.float32(0.01)
    assert type(opt["gamma1"]) is np.float64 and opt["centered"] == np.True_
    kwargs = I.rmsprop_kwargs(opt, [0])
    assert kwargs["learning_rate"] == float(np.float32(0.01)) and kwargs["centered"] is True
    assert kwargs["clip_weights"] == 2.0 and kwargs["gamma1"] == 0.95
    mxopt.rmsprop(**kwargs)


def test_numpy_shape_states():
    ckpt = I.load_states(golden("np_shape.states"))
    assert ckpt.optimizer["allow_np_array"] is True
    np.testing.assert_array_equal(ckpt.states[1], [0.0, 1.0, 2.0])  # an mx.np.ndarray
    assert ckpt.states[2][0].shape == () and ckpt.states[2][0] == np.float32(1.5)


def test_records_are_inert_and_read_only():
    opt = run_of("plain").ckpt.optimizer
    with pytest.raises(TypeError):
        opt.fields["lr"] = 1.0
    with pytest.raises(AttributeError):
        opt.cls = "x"
    with pytest.raises(KeyError, match="RMSProp has no field 'momentum'"):
        opt["momentum"]
    assert opt.replace(lr=0.5)["lr"] == 0.5 and opt["lr"] == 0.01


# --------------------------------------------------------------------------------------
# Safety: hostile pickles are refused without running
# --------------------------------------------------------------------------------------

class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_payloads(marker):
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
        "builtins.eval": _Evil(eval, touch),
        "builtins.exec": _Evil(exec, touch),
        "open": _Evil(open, str(marker), "w"),
    }


@pytest.mark.parametrize("target", ["os.system", "subprocess.Popen", "builtins.eval",
                                    "builtins.exec", "open"])
@pytest.mark.parametrize("where", ["alone", "before_genuine", "after_genuine"])
def test_hostile_pickles_are_refused_without_running(tmp_path, target, where):
    marker = tmp_path / "pwned"
    evil = _hostile_payloads(marker)[target]
    pickled_name = f"{evil.func.__module__}.{evil.func.__qualname__}"  # e.g. posix.system
    if where == "alone":
        data = pickle.dumps(evil)
    else:
        # A genuine mxopt-written .states file with the payload spliced in.
        params = {"w": jnp.ones(3, jnp.float32)}
        genuine = I.dumps_states(I.rmsprop_state_to_mxnet(
            mxopt.rmsprop().init(params), params, {0: "w"}, I.rmsprop_optimizer()))
        payload = pickle.dumps(evil, protocol=3)[2:-1]  # without PROTO and STOP
        if where == "before_genuine":  # ((payload), (states, optimizer)) as a tuple
            data = genuine[:2] + b"(" + payload + genuine[2:-1] + b"t."
        else:  # the genuine pair is fully built, then the payload (popped) before STOP
            data = genuine[:-1] + payload + b"0."
    path = tmp_path / "ckpt.states"
    path.write_bytes(data)
    with pytest.raises(I.UnsafePickleError, match=f"refusing to load {pickled_name}") as info:
        I.load_states(path)
    assert str(info.value).startswith(f"{path}: ")
    assert not marker.exists()


def test_hostile_payload_is_live(tmp_path):
    """The payloads above do run when unpickled normally (so the test above can fail)."""
    marker = tmp_path / "pwned"
    data = pickle.dumps(_hostile_payloads(marker)["builtins.exec"])
    subprocess.run([sys.executable, "-c", "import pickle, sys; "
                    "pickle.loads(sys.stdin.buffer.read())"], input=data, check=True)
    assert marker.exists()


def _ndarray_pickle_parts(size=4):
    raw = _mxformat.encode_ndarray(np.ones(size, np.float32))
    cls = b"cmxnet.ndarray.ndarray\nNDArray\n"
    handle = b"X\x06\x00\x00\x00handle"
    blob = b"cbuiltins\nbytearray\nB" + struct.pack("<I", len(raw)) + raw + b"\x85R"
    return cls, handle, blob


def test_shared_payload_amplification_is_refused():
    cls, handle, blob = _ndarray_pickle_parts(size=4096)
    one = cls + b"N\x85R}" + handle
    # The first NDArray stores its 16 KB bytearray in memo 0; 200 more reuse it, so
    # 20 KB of pickle would decode to 3 MB (and a few MB of pickle to terabytes).
    data = b"\x80\x03](" + one + blob + b"q\x00sb" + (one + b"h\x00sb") * 200 + b"e."
    with pytest.raises(I.MXNetFormatError, match="reuses array payloads"):
        I.restricted_loads(data, "bomb")
    # One reference each is fine.
    cls, handle, blob = _ndarray_pickle_parts()
    one = cls + b"N\x85R}" + handle
    fine = I.restricted_loads(b"\x80\x03](" + (one + blob + b"sb") * 3 + b"e.")
    assert len(fine) == 3 and all(a.tolist() == [1.0] * 4 for a in fine)


@pytest.mark.parametrize("data, error, match", [
    (b"\x80\x03B" + struct.pack("<I", 2 ** 31) + b"abc.", I.MXNetFormatError, "not a valid pickle"),
    (b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 62) + b".", I.MXNetFormatError, "not a valid pickle"),
    (b"\x80\x04\x95" + struct.pack("<Q", 2 ** 40) + b"N.", I.MXNetFormatError, "frame .* claims"),
    (b"\x80\x03]q\x00h\x00a.", I.MXNetFormatError, "reference cycle"),
    (b"\x80\x03" + b"]" * 100 + b"a" * 99 + b".", I.MXNetFormatError, "nests deeper"),
    (b"\x80\x03N.N", I.MXNetFormatError, "1 unexpected bytes after the end"),
    (b"\x80\x03X\x01\x00\x00\x00xQ.", I.UnsafePickleError, "persistent id"),
    (b"\x80\x03cmxnet.ndarray.ndarray\nNDArray\nK\x05\x85R.", I.UnsafePickleError,
     "unexpected arguments"),
    (b"\x80\x03cmxnet.optimizer.optimizer\nSGD\n)\x81.", I.MXNetFormatError,
     "SGD without state"),
    (b"\x80\x03cnumpy\ndtype\nX\x01\x00\x00\x00O\x89\x88\x87R.", I.UnsafePickleError,
     "not a plain numeric dtype"),
    (b"\x80\x03ccopyreg\n_reconstructor\n.", I.UnsafePickleError,
     "refusing to load copyreg._reconstructor"),
])
def test_malformed_pickles_fail_clearly(data, error, match):
    with pytest.raises(error, match=match):
        I.restricted_loads(data, "x.states")


@pytest.mark.parametrize("obj, match", [
    ([1, 2], "expected a dict of optimizer states"),
    ({0: "text"}, r"state 0 is a str, not an array"),
    ({0.5: None}, r"state key 0.5 is not a parameter index"),
    (({}, {}), r"the second element of the \(states, optimizer\) pair is a dict"),
])
def test_states_structure_is_checked(obj, match):
    with pytest.raises(I.MXNetFormatError, match=match):
        I.loads_states(pickle.dumps(obj), "s")


# --------------------------------------------------------------------------------------
# Index maps and leaf names
# --------------------------------------------------------------------------------------

def test_trainer_index_map_sorts_full_names():
    run = run_of("plain")
    assert run.index_map == {0: "1.beta", 1: "1.gamma", 2: "1.running_mean",
                             3: "1.running_var", 4: "0.bias", 5: "0.weight",
                             6: "2.bias", 7: "2.weight"}
    assert I.trainer_index_map(run.meta["full_names"])[0] == "net_bn_beta"
    # Numbering by collect order instead (a common mistake) is caught by the shapes.
    wrong = dict(enumerate(run.meta["structural_names"]))
    with pytest.raises(ValueError, match=r"leaf '0.weight' \(MXNet index 0\): state n has "
                                         r"shape \(3,\) but the leaf has shape \(3, 2, 3, 3\)"):
        I.resume_rmsprop(run.ckpt, run.trainable, wrong)


@pytest.mark.parametrize("full, structural, error, match", [
    (["a", "a"], None, ValueError, "full_names names 'a' twice"),
    (["a", "b"], ["x"], ValueError, "structural_names has 1 names but full_names has 2"),
    ("ab", None, TypeError, "not a single string"),
    ([1], None, TypeError, "must hold str names"),
])
def test_trainer_index_map_errors(full, structural, error, match):
    with pytest.raises(error, match=match):
        I.trainer_index_map(full, structural)


def test_leaf_names_join_key_paths():
    tree = {"fc": {"weight": 1.0, "bias": 2.0}, "layers": [3.0, {"w": 4.0}], "0.weight": 5.0}
    assert I.leaf_names(tree) == ["0.weight", "fc/bias", "fc/weight", "layers/0", "layers/1/w"]
    with pytest.raises(ValueError, match="both named 'a/b'"):
        I.leaf_names({"a/b": 1.0, "a": {"b": 2.0}})


# --------------------------------------------------------------------------------------
# Continuing MXNet's runs in JAX
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", ["plain", "factor_scheduler", "float16_multi_precision"])
def test_continue_mxnet_run_in_jax(name, jit):
    run = run_of(name)
    resumed, params, state = continue_in_jax(run, jit)
    for k in run.trainable:
        want = run.z[f"final/{k}"]
        got = np.asarray(params[k])
        if k in resumed.master_leaves:
            got = got.astype(np.float16)  # MXNet's weight is the cast master copy
        assert got.dtype == want.dtype, k
        # mxopt rounds exactly as MXNet's kernels do, with or without jit
        np.testing.assert_array_equal(got, want, err_msg=k)
    assert int(state.count) == run.meta["final_num_update"]
    names = ("n", "g_avg", "delta") if isinstance(state, mxopt.CenteredRMSPropState) else ("n",)
    for k in run.trainable:
        idx = run.index_of[k]
        for j, field in enumerate(names):
            np.testing.assert_allclose(getattr(state, field)[k], run.z[f"final_state/{idx}/{j}"],
                                       rtol=RTOL, atol=ATOL, err_msg=f"{field} {k}")
        if k in resumed.master_leaves:
            np.testing.assert_allclose(params[k], run.z[f"final_state/{idx}/master"],
                                       rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_continue_run_with_a_gluon_lr_mult(jit):
    """Gluon's Parameter.lr_mult is not in the .states file: the user supplies it, and
    each group of equal multipliers gets its own mxopt.rmsprop."""
    run = run_of("centered_lr_mult")
    idx = run.index_of["2.weight"]
    mults = {idx: run.meta["config"]["lr_mult"]["2.weight"]}
    with pytest.raises(ValueError, match=rf"lr_mult 0.5, wd_mult 1: indices \[{idx}\]"):
        I.resume_rmsprop(run.ckpt, run.trainable, run.index_map, param_lr_mult=mults)
    rest = [k for k in run.trainable if k != "2.weight"]
    finals = {}
    for names in (rest, ["2.weight"]):
        resumed, params, _ = continue_in_jax(run, jit, names, param_lr_mult=mults)
        finals.update(params)
        if names == ["2.weight"]:
            assert resumed.kwargs["learning_rate"] == 0.005 * 0.5
    for k in run.trainable:
        np.testing.assert_allclose(finals[k], run.z[f"final/{k}"], rtol=RTOL, atol=ATOL,
                                   err_msg=k)


def test_resume_reports_rmsprop_hyperparameters():
    run = run_of("plain")
    resumed = I.resume_rmsprop(run.ckpt, run.trainable, run.index_map)
    cfg = run.meta["config"]["opt"]
    assert resumed.kwargs == dict(learning_rate=0.01, gamma1=0.9, gamma2=0.9, epsilon=1e-8,
                                  centered=False, clip_weights=None, wd=cfg["wd"],
                                  rescale_grad=cfg["rescale_grad"] / run.meta["batch"],
                                  clip_gradient=0.5)
    assert isinstance(resumed.state, mxopt.RMSPropState) and resumed.master_leaves == ()
    chex.assert_trees_all_equal_structs(resumed.state.n, run.trainable)
    # The converted state is what mxopt.rmsprop's own init would have built, with MXNet's values.
    template = mxopt.rmsprop(**resumed.kwargs).init(run.trainable)
    chex.assert_trees_all_equal_shapes_and_dtypes(template, resumed.state)


def test_saved_scheduler_becomes_an_mxopt_scheduler_and_unknown_ones_are_refused():
    run = run_of("factor_scheduler")
    resumed = I.resume_rmsprop(run.ckpt, run.trainable, run.index_map)
    assert isinstance(resumed.kwargs["learning_rate"], mxopt.lr_scheduler.FactorScheduler)
    custom = I.MXNetObject("mymodule.MyScheduler", dict(
        warmup_steps=0, warmup_begin_lr=0, warmup_mode="linear", warmup_final_lr=0.1))
    with pytest.raises(ValueError, match="unsupported LR scheduler mymodule.MyScheduler"):
        I.lr_scheduler_from_mxnet(custom)


def test_clip_bounds_follow_mxnet_truthiness():
    opt = run_of("plain").ckpt.optimizer
    for value, want in ((None, None), (0.0, None), (-1.0, None), (0.3, 0.3)):
        kwargs = I.rmsprop_kwargs(opt.replace(clip_gradient=value, clip_weights=value), [0])
        assert kwargs["clip_gradient"] == want and kwargs["clip_weights"] == want


def test_module_api_multipliers_by_name():
    """Module-style optimizers carry idx2name and name-keyed multipliers; MXNet zeroes
    wd for names not ending in _weight or _gamma (set_wd_mult)."""
    opt = run_of("plain").ckpt.optimizer.replace(
        idx2name={0: "fc_weight", 1: "fc_bias"}, lr_mult={"fc_weight": 2.0},
        wd_mult={"fc_bias": 0.0})
    assert I.rmsprop_kwargs(opt, [0])["learning_rate"] == 0.02
    assert I.rmsprop_kwargs(opt, [1])["wd"] == 0.0
    with pytest.raises(ValueError, match="different learning-rate or weight-decay multipliers"):
        I.rmsprop_kwargs(opt, [0, 1])


def test_counts_that_one_count_cannot_represent():
    run = run_of("factor_scheduler")
    counts = dict(run.ckpt.optimizer["_index_update_count"])
    counts[5] -= 2
    skewed = run.ckpt.optimizer.replace(_index_update_count=counts)
    states = I.MXNetStates(run.ckpt.states, skewed)
    with pytest.raises(ValueError, match=r"update counts .* differ from num_update 5: with an LR "
                                         r"scheduler"):
        I.rmsprop_state_from_mxnet(states, run.trainable, run.index_map)
    # An explicit count is a deliberate choice; without a scheduler counts do not matter.
    assert int(I.rmsprop_state_from_mxnet(states, run.trainable, run.index_map,
                                          count=7).state.count) == 7
    plain = I.MXNetStates(run.ckpt.states, skewed.replace(lr_scheduler=None))
    assert int(I.rmsprop_state_from_mxnet(plain, run.trainable, run.index_map).state.count) == 5


def test_conversion_errors_name_the_leaf():
    run = run_of("plain")
    p = dict(run.trainable)
    with pytest.raises(ValueError, match=r"leaf '1.running_mean' \(MXNet index 2\) has no "
                                         r"optimizer state"):
        I.rmsprop_state_from_mxnet(run.ckpt, run.params, run.index_map)
    with pytest.raises(ValueError, match=r"leaf 'extra' has no MXNet index"):
        I.rmsprop_state_from_mxnet(run.ckpt, {**p, "extra": np.ones(2, np.float32)}, run.index_map)
    with pytest.raises(ValueError, match=r"leaf '2.weight' \(MXNet index 7\): state n has shape "
                                         r"\(4, 48\) but the leaf has shape \(48, 4\)"):
        I.rmsprop_state_from_mxnet(run.ckpt, {**p, "2.weight": p["2.weight"].T}, run.index_map)
    with pytest.raises(ValueError, match=r"leaf '0.bias' \(MXNet index 4\): state n is float32 "
                                         r"but the leaf is float64"):
        I.rmsprop_state_from_mxnet(run.ckpt, {**p, "0.bias": p["0.bias"].astype(np.float64)},
                                   run.index_map)
    del p["2.bias"]
    with pytest.raises(ValueError, match=r"states for MXNet indices 6 \('2.bias'\) that no leaf"):
        I.rmsprop_state_from_mxnet(run.ckpt, p, run.index_map)
    assert I.rmsprop_state_from_mxnet(run.ckpt, p, run.index_map, allow_unused=True)
    with pytest.raises(ValueError, match="maps both 4 and 5 to the leaf '0.bias'"):
        I.rmsprop_state_from_mxnet(run.ckpt, p, {**run.index_map, 5: "0.bias"})
    adam = I.MXNetStates(run.ckpt.states, I.MXNetObject("mxnet.optimizer.optimizer.Adam",
                                                          dict(run.ckpt.optimizer.fields)))
    with pytest.raises(ValueError, match="is a mxnet.optimizer.optimizer.Adam; mxopt converts"):
        I.rmsprop_state_from_mxnet(adam, p, run.index_map, allow_unused=True)


def test_states_without_optimizer_need_a_count():
    run = run_of("plain")
    only = I.load_states(golden("plain.nooptim.states"))
    with pytest.raises(ValueError, match="pass count="):
        I.rmsprop_state_from_mxnet(only, run.trainable, run.index_map)
    with pytest.raises(ValueError, match="hyperparameters are unknown"):
        I.resume_rmsprop(only, run.trainable, run.index_map)
    got = I.rmsprop_state_from_mxnet(only, run.trainable, run.index_map, count=5)
    want = I.rmsprop_state_from_mxnet(run.ckpt, run.trainable, run.index_map)
    chex.assert_trees_all_equal(got.state, want.state)


# --------------------------------------------------------------------------------------
# Back to MXNet
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_export_writes_the_file_mxnet_continued_from(name):
    """tools/make_golden_interop.py loaded {name}.mxopt.states into a Gluon Trainer and
    continued bit-identically to the uninterrupted run; mxopt's JAX-side export of the
    converted state produces exactly those bytes."""
    run = run_of(name)
    converted = I.rmsprop_state_from_mxnet(run.ckpt, run.trainable, run.index_map)
    exported = I.rmsprop_state_to_mxnet(converted.state, converted.params, run.index_map,
                                        run.ckpt.optimizer, master_leaves=converted.master_leaves)
    assert I.dumps_states(exported) == read(f"{name}.mxopt.states")


def test_export_after_continuing_matches_mxnet_final_states(tmp_path):
    run = run_of("plain")
    resumed, params, state = continue_in_jax(run, jit=False)
    path = tmp_path / "continued.states"
    I.save_states(path, I.rmsprop_state_to_mxnet(state, params, run.index_map,
                                                 run.ckpt.optimizer))
    back = I.load_states(path)
    final = run.meta["final_num_update"]
    assert back.optimizer["num_update"] == final
    assert back.optimizer["_index_update_count"] == {i: final for i in run.ckpt.states}
    for idx, (n,) in back.states.items():
        np.testing.assert_array_equal(n, run.z[f"final_state/{idx}/0"])


def test_fresh_optimizer_record_matches_mxnet():
    """rmsprop_optimizer builds the optimizer MXNet's constructor builds (the golden
    script checked the same function against MXNet's __dict__)."""
    run = run_of("factor_scheduler")
    cfg = run.meta["config"]["opt"]
    fresh = I.rmsprop_optimizer(learning_rate=cfg["learning_rate"], centered=True,
                                clip_gradient=cfg["clip_gradient"],
                                rescale_grad=cfg["rescale_grad"] / run.meta["batch"],
                                lr_scheduler=run.ckpt.optimizer["lr_scheduler"])
    converted = I.rmsprop_state_from_mxnet(run.ckpt, run.trainable, run.index_map)
    exported = I.rmsprop_state_to_mxnet(converted.state, run.trainable, run.index_map, fresh)
    assert dict(exported.optimizer.fields) == dict(run.ckpt.optimizer.fields)
    with pytest.raises(TypeError, match="an optax schedule has no MXNet equivalent"):
        I.rmsprop_optimizer(learning_rate=optax.constant_schedule(0.1))


def test_states_writer_round_trips_values_and_sharing():
    shared = {0: 3, 1: 3}
    sched = I.MXNetObject("mxnet.lr_scheduler.PolyScheduler",
                          {"base_lr": 0.1, "power": 2, "max_update": 2 ** 40, "final_lr": -0.0})
    fields = {"lr": 0.1, "num_update": -2 ** 31 - 1, "big": 2 ** 70, "neg": -(2 ** 70),
              "name": "näme", "flag": np.True_, "np_float": np.float32(0.5), "none": None,
              "nested": {"a": [1, (2.5, "x")], "b": ()}, "lr_scheduler": sched,
              "_all_index_update_counts": {0: shared}, "_index_update_count": shared,
              "many": [{"i": i} for i in range(300)]}  # more than 256 memo entries
    opt = I.MXNetObject("mxnet.optimizer.optimizer.RMSProp", fields)
    states = I.MXNetStates({0: (np.arange(3, dtype=np.float32),), "x": np.ones((2, 2)),
                            7: None}, opt)
    back = I.loads_states(I.dumps_states(states))
    assert back.optimizer["_index_update_count"] is back.optimizer["_all_index_update_counts"][0]
    want = dict(fields, flag=True, np_float=0.5)
    assert dict(back.optimizer.fields) == want
    assert type(back.optimizer["flag"]) is bool
    assert back.states[7] is None and back.states["x"].dtype == np.float64
    np.testing.assert_array_equal(back.states[0][0], [0.0, 1.0, 2.0])
    with pytest.raises(TypeError, match="cannot write a set"):
        I.dumps_states(I.MXNetStates({}, opt.replace(lr={1, 2})))
    with pytest.raises(ValueError, match="cannot write a builtins.object"):
        I.dumps_states(I.MXNetStates({}, opt.replace(lr_scheduler=I.MXNetObject(
            "builtins.object", {}))))


def test_export_errors():
    params = {"w": jnp.ones(3, jnp.float32)}
    plain = mxopt.rmsprop().init(params)
    centered = mxopt.rmsprop(centered=True).init(params)
    with pytest.raises(ValueError, match="centered=False.*keeps a RMSPropState, but the state is a "
                                         "CenteredRMSPropState"):
        I.rmsprop_state_to_mxnet(centered, params, {0: "w"}, I.rmsprop_optimizer())
    with pytest.raises(ValueError, match="master_leaves need an optimizer with multi_precision"):
        I.rmsprop_state_to_mxnet(plain, params, {0: "w"}, I.rmsprop_optimizer(),
                                 master_leaves=["w"])
    with pytest.raises(ValueError, match="leaf 'w' has no MXNet index"):
        I.rmsprop_state_to_mxnet(plain, params, {0: "v"})
    with pytest.raises(TypeError, match="must be an mxopt.rmsprop state"):
        I.rmsprop_state_to_mxnet(optax.adam(0.1).init(params), params, {0: "w"})
    with pytest.raises(ValueError, match="state.n does not have the structure of params"):
        I.rmsprop_state_to_mxnet(plain, {"w": params["w"], "v": params["w"]}, {0: "w", 1: "v"})
    only = I.rmsprop_state_to_mxnet(plain, params, {3: "w"})
    assert only.optimizer is None and list(only.states) == [3]
    assert isinstance(I.loads_states(I.dumps_states(only)).states[3][0], np.ndarray)


def test_scheduler_rebuilt_from_the_record_gives_mxnets_rates():
    run = run_of("factor_scheduler")
    opt = run.ckpt.optimizer
    sched = I.lr_scheduler_from_mxnet(opt["lr_scheduler"], opt["lr"])
    first = run.meta["steps_before"] + 1
    rates = [sched(first + k) for k in range(run.meta["steps_after"])]
    assert rates == run.meta["learning_rates"]
    assert rates == factor_schedule_from_record(opt["lr_scheduler"], first, len(rates))


@pytest.mark.parametrize("name", ["plain", "centered_lr_mult", "factor_scheduler",
                                  "float16_multi_precision"])
def test_updater_set_states_continues_an_mxnet_trainer_file(name):
    # Trainer.save_states bytes straight into mxopt's class API (issue: facade).
    run = run_of(name)
    updater = mxopt.get_updater(mxopt.RMSProp())
    updater.set_states(read(f"{name}.states"))
    opt = updater.optimizer
    assert isinstance(opt, mxopt.RMSProp) and opt.num_update == run.meta["steps_before"]
    mults = {}
    if run.meta["config"]["lr_mult"]:  # Gluon keeps these on the Parameter, unsaved
        mults = {run.index_of[k]: v for k, v in run.meta["config"]["lr_mult"].items()}

    class _Param:
        def __init__(self, lr_mult):
            self.lr_mult, self.wd_mult = lr_mult, 1.0

    opt.param_dict = {i: _Param(m) for i, m in mults.items()}
    dtype = np.dtype(run.meta["config"]["dtype"])
    weights = {k: jnp.asarray(run.trainable[k]).astype(dtype) for k in run.trainable}
    for t in range(run.meta["steps_after"]):
        grads = run.grads(t, list(run.trainable))
        for k in run.trainable:
            i = run.index_of[k]
            weights[k] = updater(i, jnp.asarray(grads[k]).astype(dtype), weights[k])
    for k in run.trainable:
        np.testing.assert_array_equal(np.asarray(weights[k]), run.z[f"final/{k}"], err_msg=k)
    assert opt.num_update == run.meta["final_num_update"]
