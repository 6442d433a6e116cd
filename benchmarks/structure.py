"""The structure floor: a step with the same loops as a compiled optimizer step.

XLA:CPU writes each output of a step with its own loop, and a loop that reads
more input streams moves its bytes at a lower bandwidth than ``w + g`` does. So
the floor (``w + g``, ``s * 0.9 + g``) is not what a pure-XLA step with an
optimizer's state can reach, and neither is the floor scaled by the ratio of
the bytes each step moves. The structure step is the measured answer: it is
read off the optimized HLO of the optimizer's own jitted step
(``compiled.as_text()``) and rebuilds the same read graph with trivial
arithmetic:

- every parameter-sized value the step computes (a loop: an array with the
  element count of a parameter-sized array it reads; the entry's
  parameter-sized arrays are those with a leaf's element count) becomes
  ``sum_i c_i * a_i + 1e-3 * s``. The ``a_i`` are the same parameter-sized
  arrays the optimizer's loop reads (old buffers, or other loops' results),
  ``c_i = 2**-(i + 1)`` times a constant that differs between two loops
  reading the same arrays (so that XLA merges no two loops) and is shared
  across leaves (so that XLA compiles one body per shape), and ``s`` stands
  for the scalars the loop reads. The ``c_i`` sum to less than 1, so values
  stay bounded over any number of steps;
- every other value (scalars: counts, learning rates, norms) is tracked as
  the set of scalar inputs and reductions it depends on, and ``s`` is half
  the mean of that set. Only a reduction, a scalar reading parameter-sized
  arrays, is computed: ``s + mean(a_1 * a_2 * ...)`` over the arrays it
  reads (``mean(a * a)`` for one). A parameter-sized loop read only by
  reductions, which XLA makes for a small leaf's norm, is folded into the
  reduction's read, where ``jnp.mean(w * w)`` makes it again;
- each output leaf is the value the optimizer's step returns there.

The loops then read the same arrays and depend on each other as the
optimizer's do, so XLA orders them alike, updates the donated buffers in place
and makes no copies; :func:`verify` checks this from the two executables'
bytes accessed and temporary bytes rather than assuming it.

Only what the benchmarks need is parsed: the entry computation of an
optimized XLA:CPU module, its parameters named by JAX's argument paths
(``params['conv_weight']``). Anything else raises :class:`Unsupported`, and the
benchmark row says so instead of printing a number.
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp

__all__ = ["Unsupported", "bytes_accessed", "parallel_loops", "parse_entry", "structure_step",
           "verify"]


class Unsupported(ValueError):
    """The compiled step has something the structure step cannot reproduce."""


_DTYPES = {"f32": jnp.float32, "f16": jnp.float16, "bf16": jnp.bfloat16, "f64": jnp.float64,
           "s32": jnp.int32, "s64": jnp.int64, "u32": jnp.uint32, "u8": jnp.uint8,
           "s8": jnp.int8, "pred": jnp.bool_}
_ARRAY = re.compile(r"^(\w+)\[([\d,]*)\]")


def _matching(text, start):
    """Index of the parenthesis closing the one at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise Unsupported(f"unbalanced parentheses in HLO line: {text[:200]}")


def _split_top(text):
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1, "[": 1, "]": -1, "{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return [p.strip() for p in parts if p.strip()]


def _shape(text):
    """``f32[3,3]{1,0}`` -> ("f32", (3, 3)); a tuple shape -> a list of those."""
    if text.startswith("("):
        return [_shape(p) for p in _split_top(text[1:-1])]
    m = _ARRAY.match(text)
    if not m:
        raise Unsupported(f"cannot read HLO shape {text!r}")
    return m.group(1), tuple(int(d) for d in m.group(2).split(",") if d)


def parse_entry(hlo_text):
    """The entry computation of an optimized HLO module, in program order.

    Returns a list of dicts: ``name``, ``shape`` (see :func:`_shape`), ``op``,
    ``operands`` (instruction names), ``root`` (bool), and for parameters
    ``path`` (JAX's argument path, ``op_name`` in the metadata) and for
    get-tuple-element ``index``."""
    lines = hlo_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("ENTRY"))
    except StopIteration:
        raise Unsupported("no ENTRY computation in the HLO text") from None
    out = []
    for line in lines[start + 1:]:
        if line.startswith("}"):
            break
        line = re.sub(r"/\*.*?\*/", "", line).strip()
        m = re.match(r"(ROOT )?%(\S+) = ", line)
        if not m:
            continue
        rest = line[m.end():]
        if rest.startswith("("):
            end = _matching(rest, 0)
            shape_text, rest = rest[:end + 1], rest[end + 1:].lstrip()
        else:
            shape_text, rest = rest.split(" ", 1)
        paren = rest.index("(")
        op = rest[:paren]
        close = _matching(rest, paren)
        inst = dict(name=m.group(2), shape=_shape(shape_text), op=op, root=bool(m.group(1)),
                    operands=re.findall(r"%([\w.\-]+)", rest[paren:close]))
        attrs = rest[close + 1:]
        if op == "parameter":
            path = re.search(r'op_name="((?:[^"\\]|\\.)*)"', attrs)
            inst["path"] = re.sub(r"\\(.)", r"\1", path.group(1)) if path else None
        if op == "get-tuple-element":
            inst["index"] = int(re.search(r"index=(\d+)", attrs).group(1))
        out.append(inst)
    if not out or not out[-1]["root"]:
        raise Unsupported("the entry computation has no ROOT instruction")
    return out


def _paths(tree, prefix):
    return [prefix + jax.tree_util.keystr(p) for p, _ in
            jax.tree_util.tree_flatten_with_path(tree)[0]]


def structure_step(hlo_text, params, state, grads):
    """``step(params, state, grads) -> (params, state)`` with the loops of the step
    whose optimized HLO is ``hlo_text`` (compiled for these trees' shapes), and
    trivial arithmetic. Raises :class:`Unsupported` if it cannot be rebuilt."""
    insts = parse_entry(hlo_text)
    by_name = {i["name"]: i for i in insts}
    sizes = {math.prod(x.shape) for x in jax.tree.leaves(params) if x.ndim}
    in_paths = _paths(params, "params") + _paths(state, "state") + _paths(grads, "grads")
    out_paths = _paths(params, "params") + _paths(state, "state")
    root = insts[-1]
    if root["op"] != "tuple" or len(root["operands"]) != len(out_paths):
        raise Unsupported(f"the step's ROOT is not a tuple of its {len(out_paths)} outputs")

    # Element shapes of tuple-valued instructions, and their users, resolved
    # through get-tuple-element to (instruction, element) pairs.
    def source(name):
        inst = by_name[name]
        if inst["op"] == "get-tuple-element":
            base, index = source(inst["operands"][0])
            if index is None:
                return inst["operands"][0], inst["index"]
            raise Unsupported("nested tuples in the entry computation")
        return name, None

    def shape_of(ref):
        name, index = ref
        shape = by_name[name]["shape"]
        return shape if index is None else shape[index]

    for inst in insts:
        if inst["op"] == "parameter" and inst["path"] not in in_paths:
            raise Unsupported(f"entry parameter {inst['name']} ({inst['path']!r}) is not "
                              "one of the step's argument paths")
        if isinstance(inst["shape"], list) and inst["op"] not in ("fusion", "opt-barrier",
                                                                  "tuple", "parameter"):
            raise Unsupported(f"tuple-valued {inst['op']} {inst['name']}")
    outputs = {source(n) for n in root["operands"]}
    users = {}
    for inst in insts[:-1]:
        for o in inst["operands"]:
            users.setdefault(source(o), []).append(inst)

    # Parameter-sized: an entry parameter with a leaf's element count, or a
    # value with the element count of a parameter-sized value it reads (an
    # elementwise loop). A partial reduction (XLA's reduce-window of a 2048
    # bias to 64 sums) can have a leaf's element count and is not one.
    bigrefs = set()
    for inst in insts[:-1]:
        shapes = inst["shape"] if isinstance(inst["shape"], list) else [inst["shape"]]
        counts = (sizes if inst["op"] == "parameter" else
                  {math.prod(shape_of(source(o))[1]) for o in inst["operands"]
                   if source(o) in bigrefs})
        for k, shape in enumerate(shapes):
            if (isinstance(shape, tuple) and shape[1] and math.prod(shape[1]) in counts
                    and inst["op"] != "get-tuple-element"):
                bigrefs.add((inst["name"], k if isinstance(inst["shape"], list) else None))

    def big(ref):
        return ref in bigrefs

    # A parameter-sized value read only by reductions (and not an output) is
    # part of the reduction's read, as XLA makes such a loop for a small leaf.
    internal = set()
    for inst in reversed(insts[:-1]):
        ref = (inst["name"], None)
        if inst["op"] in ("parameter", "get-tuple-element") or not big(ref):
            continue
        if ref not in outputs and users.get(ref) and all(
                not big((u["name"], None)) or (u["name"], None) in internal
                for u in users[ref]):
            internal.add(ref)

    def step(params, state, grads):
        flat_in = dict(zip(in_paths, jax.tree.leaves((params, state, grads))))
        # A parameter-sized ref's value is an array. Any other ref's value is
        # the set of scalars it depends on ("atoms": scalar inputs and
        # reductions): only reductions need arithmetic, and a loop then reads
        # the sum of its atoms, which keeps it after the reductions it needs
        # without tracing the step's thousands of scalar ops (which made a
        # 1,000-leaf tree take 36 s to compile).
        env, reads, atoms, sums, seen = {}, {}, {}, {}, {}

        def total(deps):
            """Half the mean of the atoms in ``deps`` (bounded over any steps)."""
            if deps not in sums:
                values = [atoms[a] for a in sorted(deps)]
                sums[deps] = 0.5 * sum(values) / len(values) if values else None
            return sums[deps]

        def make(ref, refs):
            """The value of ``ref`` reading ``refs`` (resolved operands), and the
            parameter-sized arrays it reads."""
            dtype, dims = shape_of(ref)
            arrays, deps = [], frozenset()
            for operand in refs:
                if operand in internal:
                    arrays += [a for a in reads[operand] if all(a is not b for b in arrays)]
                elif big(operand):
                    if all(env[operand] is not b for b in arrays):
                        arrays.append(env[operand])
                else:
                    deps |= env[operand]
            # Two values reading the same arrays differ by a constant (else XLA
            # would merge them); values of different leaves share constants, so
            # that XLA compiles one loop body per shape, as it does for mxopt.
            key = (tuple(id(a) for a in arrays), deps, big(ref))
            seen[key] = seen.get(key, 0) + 1
            unique = 1.0 + 1e-3 * seen[key]
            s = total(deps)
            if big(ref):
                n = math.prod(dims)
                acc = jnp.zeros((), jnp.float32) if s is None else s * 1e-3
                for i, a in enumerate(arrays):
                    if a.size != n:
                        raise Unsupported(f"a loop of {n} elements reads one of {a.size}")
                    acc = acc + (unique * 2.0 ** -(i + 1)) * a.reshape(dims)
                return jnp.broadcast_to(acc, dims).astype(_DTYPES[dtype]), arrays
            if not arrays:
                return deps, arrays
            groups = {}
            for a in arrays:  # one reduction per element count, reading its arrays
                groups.setdefault(a.size, []).append(a.reshape(-1))
            value = jnp.zeros((), jnp.float32) if s is None else s
            for group in groups.values():
                prod = group[0] if len(group) > 1 else group[0] * group[0]
                for a in group[1:]:
                    prod = prod * a
                value = value + unique * jnp.mean(prod)
            atoms[ref] = value
            return frozenset([ref]), arrays

        for inst in insts[:-1]:
            ref = (inst["name"], None)
            op, operands = inst["op"], [source(o) for o in inst["operands"]]
            if op == "parameter":
                x = flat_in[inst["path"]]
                if big(ref):
                    env[ref] = x
                else:
                    atoms[ref] = jnp.mean(x.astype(jnp.float32))
                    env[ref] = frozenset([ref])
            elif op == "get-tuple-element":
                continue  # resolved by source()
            elif op == "bitcast" and big(ref):
                env[ref] = env[operands[0]]  # no data movement
                if ref in internal:
                    reads[ref] = reads.get(operands[0], [env[operands[0]]])
            elif op == "opt-barrier":
                for k, o in enumerate(operands):
                    env[(inst["name"], k)] = env[o]
            elif isinstance(inst["shape"], list):  # a multi-output fusion
                for k in range(len(inst["shape"])):
                    env[(inst["name"], k)], _ = make((inst["name"], k), operands)
            else:
                value, arrays = make(ref, operands)
                env[ref] = value
                if ref in internal:
                    reads[ref] = arrays
        flat_out = []
        old = jax.tree.leaves((params, state))
        for name, like in zip(root["operands"], old):
            ref = source(name)
            value = env[ref]
            if not big(ref):
                s = total(value)
                value = jnp.broadcast_to(jnp.zeros(()) if s is None else s, like.shape)
            flat_out.append(value.reshape(like.shape).astype(like.dtype))
        return jax.tree.unflatten(jax.tree.structure((params, state)), flat_out)

    return step


def verify(reference, structure, leaves, rtol=0.01):
    """Problems (a list of strings, empty when none) with a structure step whose
    compiled executable is ``structure``, against the optimizer's ``reference``
    on a tree of ``leaves`` leaves: the bytes accessed must agree within
    ``rtol``, and the temporary bytes too, give or take 64 bytes a leaf (the
    scalars each step keeps, which differ with the arithmetic: no
    parameter-sized buffer is that small); where the reference has no
    temporary at all, neither may the structure step."""
    problems = []
    cost = [bytes_accessed(c) for c in (reference, structure)]
    if None in cost:
        problems.append("no cost analysis")
    elif abs(cost[1] - cost[0]) > rtol * cost[0]:
        problems.append(f"bytes accessed {cost[1] / cost[0]:.3f}x the optimizer's")
    temp = [c.memory_analysis().temp_size_in_bytes for c in (reference, structure)]
    slack = max(rtol * temp[0], 64 * leaves) if temp[0] else 0
    if abs(temp[1] - temp[0]) > slack:
        problems.append(f"temp bytes {temp[1]:,} vs the optimizer's {temp[0]:,}")
    return problems


def parallel_loops(compiled):
    """``(loops, elements)``: how many loops XLA:CPU splits across threads
    (``outer_dimension_partitions`` above 1) and their elements. Its cost model
    splits a loop with more arithmetic sooner, so the structure step, with
    trivial arithmetic, can split fewer of the small ones: the report prints
    both steps' counts."""
    loops = elements = 0
    for line in compiled.as_text().splitlines():
        m = re.search(r'= \w+\[([\d,]*)\]\S* fusion\(.*outer_dimension_partitions":\[([^\]]*)\]',
                      line)
        if m and any(int(p.strip('" ')) > 1 for p in m.group(2).split(",") if p.strip('" ')):
            loops += 1
            elements += math.prod(int(d) for d in m.group(1).split(",") if d)
    return loops, elements


def bytes_accessed(compiled):
    """The bytes XLA's cost analysis counts as read and written by ``compiled``."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    return (cost or {}).get("bytes accessed")
