"""XGBoost's float32 output transforms: ``reference.expf`` is the C library's ``expf`` bit for bit,
and the sigmoid / softmax built on it follow XGBoost's C++ (clamp at 88.7f, double softmax sum)."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

from sparkscore.compiler import reference

LIBM = ctypes.util.find_library("m")
pytestmark = pytest.mark.skipif(LIBM is None, reason="no C math library to compare with")


def _libm_expf():
    expf = ctypes.CDLL(LIBM).expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return expf


def _samples() -> np.ndarray:
    rng = np.random.default_rng(0)
    edges = [np.inf, -np.inf, np.nan, 0.0, -0.0, 88.7, -88.7, 88.72283935546875, 88.72284, -103.972076416,
             -103.97208, -104.0, -87.33654, 1e-30, -1e-30, 2.0 ** -149]
    return np.concatenate([rng.uniform(-110, 95, 40_000), rng.normal(0, 3, 40_000), edges]).astype(np.float32)


def test_expf_is_the_c_librarys():
    expf = _libm_expf()
    x = _samples()
    expected = np.array([expf(float(v)) for v in x], dtype=np.float32)
    got = reference.expf(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    # the float64 shortcut is not the same function (why expf exists at all)
    assert (np.exp(x.astype(np.float64)).astype(np.float32) != expected).sum() > 0


def test_sigmoid32_is_xgboosts():
    expf = _libm_expf()
    x = np.concatenate([_samples(), np.float32([-88.7, -88.71, -89.0, -120.0, 120.0])])

    def xgb_sigmoid(v):  # common::Sigmoid(float), step by step in float32
        v = np.float32(v)
        t = np.float32(88.7) if np.float32(88.7) < -v else -v
        denom = np.float32(np.float32(expf(float(t))) + np.float32(1.0)) + np.float32(1e-16)
        return np.float32(np.float32(1.0) / denom)

    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.array([xgb_sigmoid(v) for v in x], dtype=np.float32)
        got = reference.sigmoid32(x)
    np.testing.assert_array_equal(got, expected)
    assert got[np.flatnonzero(x == np.float32(-120.0))[0]] > 0  # the clamp: not 0


def test_softmax32_sums_in_double_and_divides_in_float32():
    expf = _libm_expf()
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (500, 4)).astype(np.float32)
    z[0] = [np.nan, 1.0, 2.0, 0.5]  # fmaxf skips NaN
    got = reference.softmax32(z)
    for row, out in zip(z, got):
        wmax = row[0]
        for v in row[1:]:
            wmax = np.fmax(v, wmax)
        e = [np.float32(expf(float(np.float32(v - wmax)))) for v in row]
        wsum = 0.0
        for v in e:
            wsum += float(v)
        np.testing.assert_array_equal(out, np.array([v / np.float32(wsum) for v in e], dtype=np.float32))
