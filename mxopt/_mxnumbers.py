"""How MXNet 1.9.1 receives a Python number, and C's ``powf``.

MXNet's Python front end sends every operator argument as ``str(value)``, and the
C++ side parses it with one of three parsers:

* a C++ ``float`` operator field (``lr``, ``wd``, ``momentum``, ``beta1``, ...,
  of every kernel) goes through dmlc-core's fast ``dmlc::stof``, which is *not*
  correctly rounded: :func:`kernel_float`;
* a C++ ``double`` field (FTML's ``epsilon``, and the ``scalar`` of NDArray
  scalar operators such as ``grad * 0.5``) goes through ``dmlc::stod``, then is
  cast to the array dtype: :func:`kernel_double`, :func:`scalar_operand`;
* a ``Tuple<float>`` entry (``multi_sgd_*``'s ``lrs`` and ``wds``) goes through
  ``std::istream``, which is correctly rounded: :func:`tuple_float`.

Short decimal literals (0.1, 0.9, 1e-8, ...) come out the same every way; rates
computed in Python (a scheduler's ``base_lr * factor**k``, ``lr * lr_mult``,
Adam's bias correction folded into lr) differ from ``float32(value)`` by one ulp
in roughly one case in seven. Both the JAX kernels (:mod:`mxopt._kernels`) and
their NumPy twins (:mod:`mxopt.reference`) take their numbers from here; the
golden data from real MXNet checks both (``tests/golden/family/parsing.npz``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from fractions import Fraction

import numpy as np

__all__ = ["kernel_float", "received_float", "received_floats", "distinct", "kernel_double",
           "tuple_float", "scalar_operand", "powf"]

_STRTOF_MAX_DIGITS = 19  # dmlc-core's kStrtofMaxDigits: later fraction digits are dropped


def _dmlc_parse(text: str, ftype):
    """dmlc::ParseFloat<ftype> (dmlc-core 5df8305, the submodule of MXNet 1.9.1).

    Integer digits, then ``float(fraction_digits / 10**n)`` added in ``ftype``, then
    a power of ten built by repeated ``ftype`` products and applied with one
    ``ftype`` multiplication or division. Every step rounds in ``ftype``.
    """
    s = text.strip()
    negative = s.startswith("-")
    if s[:1] in "+-":
        s = s[1:]
    low = s.lower()
    if low.startswith("inf"):
        value = ftype(np.inf)
    elif low.startswith("nan"):
        value = ftype(np.nan)
    else:
        pos = 0
        predec = 0
        while pos < len(s) and s[pos].isdigit():
            predec = (predec * 10 + int(s[pos])) % (1 << 64)
            pos += 1
        value = ftype(predec)
        if pos < len(s) and s[pos] == ".":
            pos += 1
            digits, pow10, count = 0, 1, 0
            while pos < len(s) and s[pos].isdigit():
                if count < _STRTOF_MAX_DIGITS:
                    digits, pow10 = digits * 10 + int(s[pos]), pow10 * 10
                pos += 1
                count += 1
            value = ftype(value + ftype(np.float64(digits) / np.float64(pow10)))
        if pos < len(s) and s[pos] in "eE":
            pos += 1
            divide = s[pos:pos + 1] == "-"
            if s[pos:pos + 1] in ("-", "+"):
                pos += 1
            expon = 0
            while pos < len(s) and s[pos].isdigit():
                expon = expon * 10 + int(s[pos])
                pos += 1
            if expon > (308 if ftype is np.float64 else 38):
                raise OverflowError(f"MXNet rejects {text!r}: out of range")
            scale = _dmlc_scale(expon, ftype)
            value = ftype(value / scale) if divide else ftype(value * scale)
    return ftype(-value) if negative else value


def _dmlc_scale(expon: int, ftype):
    """dmlc::ParseFloat's power of ten for a decimal exponent: ``ftype`` products
    by 1e8, then by 10, each rounded in ``ftype``."""
    scale = ftype(1.0)
    while expon >= 8:
        scale, expon = ftype(scale * ftype(1e8)), expon - 8
    while expon > 0:
        scale, expon = ftype(scale * ftype(10.0)), expon - 1
    return scale


@functools.lru_cache(maxsize=4096)
def _kernel_float(text: str) -> np.float32:
    with np.errstate(all="ignore"):
        return _dmlc_parse(text, np.float32)


def kernel_float(value) -> np.float32:
    """The float32 a C++ ``float`` operator field receives from the Python ``value``.

    MXNet sends ``str(value)`` and parses it with dmlc-core's ``dmlc::stof``, which
    is not correctly rounded: ``kernel_float(0.001 * 0.9**3)`` is one ulp away from
    ``np.float32(0.001 * 0.9**3)``. Every kernel hyperparameter (``lr``, ``wd``,
    ``momentum``, ``rescale_grad``, ``clip_gradient``, ``beta1``, ...) and the
    bounds of the ``clip`` operator go this way.
    """
    return _kernel_float(str(value))


def received_float(value) -> np.float32:
    """:func:`kernel_float`, except for a number whose text MXNet's parser
    refuses (a decimal exponent beyond float's, as in ``1e-39``, which only a
    subnormal float can hold): MXNet raises there, and mxopt takes its
    correctly rounded float32 instead, so a scheduler table that runs down to
    such values, or a rate that small, still works."""
    try:
        return kernel_float(value)
    except OverflowError:
        return np.float32(value)


def kernel_double(value) -> np.float64:
    """The float64 a C++ ``double`` operator field receives (``dmlc::stod`` of
    ``str(value)``, not always correctly rounded either)."""
    with np.errstate(all="ignore"):
        return _dmlc_parse(str(value), np.float64)


def tuple_float(value) -> np.float32:
    """The float32 an entry of a ``Tuple<float>`` field (``multi_sgd_*``'s ``lrs``,
    ``wds``) receives: ``std::istream`` parses ``str(value)`` correctly rounded."""
    text = str(value)
    if not any(ch.isdigit() for ch in text):
        return np.float32(float(text))
    exact = Fraction(text)
    guess = np.float32(float(exact))
    candidates = [guess, np.nextafter(guess, np.float32(-np.inf)),
                  np.nextafter(guess, np.float32(np.inf))]
    finite = [c for c in candidates if np.isfinite(c)]
    if not finite:
        return guess

    def key(c):
        # Nearest, ties to the even significand.
        return abs(Fraction(float(c)) - exact), int(np.asarray(c).view(np.uint32)) & 1

    return min(finite, key=key)


def scalar_operand(value, dtype) -> np.ndarray:
    """The scalar of an NDArray scalar operator (``x * s``, ``x + s``, ``x / s``,
    ``x[:] *= s``): Python sends ``str(float(s))``, parsed into a C++ ``double``
    with ``dmlc::stod`` and then cast to the array's dtype."""
    return np.asarray(kernel_double(float(value))).astype(dtype)[()]


_POWF = []


def powf(base, exponent) -> np.float32:
    """C's ``powf``, which MXNet's float32 ``power`` calls (FTML's ``beta**t``).

    NumPy 2's float32 ``np.power`` is not the C library's ``powf`` and differs from
    it in the last bit for some inputs, so the twin calls libm directly (loaded on
    first use; MXNet's Linux wheel uses glibc's).
    """
    if not _POWF:
        name = ctypes.util.find_library("m")
        if name is None:
            raise OSError("reference.powf needs the C math library (libm)")
        fn = ctypes.CDLL(name).powf
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float, ctypes.c_float]
        _POWF.append(fn)
    return np.float32(_POWF[0](float(np.float32(base)), float(np.float32(exponent))))


# dmlc::stof's power of ten for each decimal exponent it accepts (0..38).
_FLOAT_SCALES = np.array([_dmlc_scale(e, np.float32) for e in range(39)], np.float32)


def received_floats(values) -> np.ndarray:
    """:func:`received_float` of every element of a float64 array, as float32,
    with the per-element work cut to splitting ``str(value)``: the arithmetic of
    ``dmlc::stof`` (:func:`_dmlc_parse`) runs vectorised, and each distinct value
    is parsed once. A scheduler's rate table can hold millions of rates."""
    values = np.asarray(values, np.float64)
    unique, inverse = distinct(values)
    out = np.empty(unique.shape, np.float32)
    predec, frac, pow10, expon, simple, refused = [], [], [], [], [], []
    for k, x in enumerate(unique.tolist()):
        text = str(abs(x))
        mant, _, exp = text.partition("e")
        whole, _, digits = mant.partition(".")
        if not (whole.isdigit() and len(whole) < 8 and math.isfinite(x)):
            out[k] = received_float(x)  # inf, nan, or integer digits past 2**24
            continue
        e = int(exp) if exp else 0
        if e > 38 or e < -38:
            refused.append(k)  # MXNet refuses the text: received_float's float32
            continue
        kept = digits[:_STRTOF_MAX_DIGITS]
        simple.append(k)
        predec.append(int(whole))
        frac.append(float(int(kept)) if kept else 0.0)
        pow10.append(10.0 ** len(kept))
        expon.append(e)
    if refused:
        with np.errstate(over="ignore"):  # beyond float32's range: inf, as np.float32
            out[refused] = unique[refused].astype(np.float32)
    if simple:
        idx = np.array(simple)
        with np.errstate(all="ignore"):
            value = np.array(predec, np.float64).astype(np.float32)
            value = (value + (np.array(frac) / np.array(pow10)).astype(np.float32)
                     ).astype(np.float32)
            e = np.array(expon)
            scale = _FLOAT_SCALES[np.abs(e)]
            value = np.where(e < 0, value / scale, value * scale).astype(np.float32)
        out[idx] = np.where(np.signbit(unique[idx]), -value, value)
    return out[inverse].reshape(values.shape)


def distinct(values: np.ndarray):
    """``(unique, inverse)`` of a float64 array by bit pattern (so -0.0 and 0.0
    stay apart, as their texts do): ``unique[inverse]`` is ``values``, flat."""
    bits, inverse = np.unique(np.ascontiguousarray(values, np.float64).view(np.int64),
                              return_inverse=True)
    return bits.view(np.float64), inverse.ravel()
