# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Helpers shared by the test modules (the regression pins)."""

import hashlib

import numpy as np


def digest(*arrays):
    """sha256 of the dtype, shape and bytes of each array, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Machine-independent fingerprints of results (the regression pins)
#
# Bit-exact digests of float results differ between CPUs (the vectorised
# kernels of another instruction set sum in another order and round the last
# bit differently), so the pins compare fingerprints instead: for each array
# the exact parts (dtype, shape, and a digest of everything that is not a
# finite float: the pattern of NaN and infinite values, every integer, boolean
# or string array) and a few float64 sums of its finite values (the sum, the
# sum of squares and PROJECTIONS fixed pseudo-random projections sum(x * w_k),
# w_k ~ N(0, 1)).  `assert_fingerprint_close` compares the exact parts exactly
# and the sums within a tolerance proportional to the data's norm
# ``||x|| = sqrt(sum x^2)`` (the sum of squares within ``2 * atol_scale``
# relative):
#
# * last-bit differences, relative ``eps`` per value with random signs, move
#   each sum by about ``eps * ||x||`` (the standard deviation of
#   ``sum(x_i * eps_i * w_i)``): ``ATOL_SCALE`` = 1.5e-5 is 15 standard
#   deviations at eps = 1e-6 and 75 at 2e-7 (two float32 ulps).  Measured on the pinned
#   results, this machine (AVX-512) against AVX2 kernels (oneDNN, MKL, numpy)
#   moved them by at most 1.4e-7 of ``||x||``, against SSE4 kernels by 1.8e-6;
# * a change of one value by ``delta`` moves the sum by ``delta`` and each
#   projection by ``delta * w_k``: one pixel of an ``n``-pixel image changed by
#   1 % of its rms ``||x|| / sqrt(n)`` moves the sum by ``0.01 / sqrt(n)`` of
#   ``||x||``, 1.1e-4 for the 96 x 80 test images, 7.6 times the tolerance
#   (2.4e-4, 16 times, for the 1722 weights of the training pins); the pins
#   would stop seeing such a pixel above n = 4.4e5 values.  Any systematic
#   change (a scale, an offset, a blur, another estimate) moves the sums by
#   far more.

PROJECTIONS = 8
FINGERPRINT_SEED = 20240917
ATOL_SCALE = 1.5e-5


def _weights(size):
    rng = np.random.default_rng(FINGERPRINT_SEED)
    return rng.standard_normal((PROJECTIONS, size))


def _short_digest(*arrays):
    return digest(*arrays)[:16]


def fingerprint(*arrays):
    """
    Fingerprint of each array, in order: a list of ``(dtype, shape, exact, sums)``.

    ``exact`` is a (shortened) sha256: of the whole array for integer, boolean,
    string or object arrays (``sums`` is then empty); for float arrays, of the
    code of each value (0 finite, 1 NaN, 2 +inf, 3 -inf).  ``sums`` are, for
    float arrays, float64 sums over the finite values, in C order: the sum, the
    sum of squares and `PROJECTIONS` projections on fixed N(0, 1) weights.
    """
    out = []
    for a in arrays:
        if hasattr(a, "detach"):                      # a torch tensor
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        head = (a.dtype.str, tuple(int(n) for n in a.shape))
        if a.dtype.kind not in "fc":
            out.append(head + (_short_digest(a), []))
            continue
        if a.dtype.kind == "c":
            raise TypeError("fingerprint: complex arrays are not supported")
        flat = a.ravel()
        finite = np.isfinite(flat)
        code = np.zeros(flat.shape, dtype=np.uint8)
        code[np.isnan(flat)] = 1
        code[np.isposinf(flat)] = 2
        code[np.isneginf(flat)] = 3
        x = flat[finite].astype(np.float64)
        w = _weights(flat.size)[:, finite]
        sums = [float(x.sum()), float((x * x).sum())] + [float(v) for v in w @ x]
        out.append(head + (_short_digest(code), sums))
    return out


def rounded(fp, digits=10):
    """`fingerprint` with its sums rounded to ``digits`` significant digits (as pinned)."""
    return [(dtype, shape, exact, [float(f"{v:.{digits}g}") for v in sums])
            for dtype, shape, exact, sums in fp]


def fingerprint_mismatches(actual, expected, *, rtol=1e-9, atol_scale=ATOL_SCALE):
    """The reasons ``actual`` differs from ``expected`` (two fingerprints); empty if close."""
    actual, expected = list(actual), list(expected)
    if len(actual) != len(expected):
        return [f"{len(actual)} arrays, expected {len(expected)}"]
    bad = []
    for i, (a, e) in enumerate(zip(actual, expected)):
        (adt, ashape, aex, asums), (edt, eshape, eex, esums) = a, e
        exact = (adt, tuple(ashape), aex, len(asums))
        if exact != (edt, tuple(eshape), eex, len(esums)):
            bad.append(f"array {i}: exact parts {exact[:3]} != {(edt, tuple(eshape), eex)}")
            continue
        if not esums:
            continue
        norm = np.sqrt(max(esums[1], 0.0))
        scales = [norm, 2.0 * norm * norm] + [norm] * (len(esums) - 2)
        for j, (av, ev, scale) in enumerate(zip(asums, esums, scales)):
            tol = rtol * abs(ev) + atol_scale * scale
            if not abs(av - ev) <= tol:
                what = ("sum", "sum of squares")[j] if j < 2 else f"projection {j - 2}"
                bad.append(f"array {i} {what}: {av!r} != {ev!r} "
                           f"(difference {abs(av - ev):.3g}, tolerance {tol:.3g})")
    return bad


def assert_fingerprint_close(actual, expected, *, rtol=1e-9, atol_scale=ATOL_SCALE):
    """
    Assert that two fingerprints agree.

    Exact parts (dtype, shape, the digests) exactly; each sum ``s`` within
    ``rtol * |s| + atol_scale * scale``, ``scale`` being the expected norm
    ``||x||`` for the sum and the projections and ``2 ||x||^2`` for the sum of
    squares.  ``rtol`` (1e-9) only covers the rounding of the pinned values to
    10 significant digits.
    """
    bad = fingerprint_mismatches(actual, expected, rtol=rtol, atol_scale=atol_scale)
    assert not bad, "fingerprints differ:\n  " + "\n  ".join(bad)


def _is_fingerprint(value):
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(e, (list, tuple)) and len(e) == 4 and isinstance(e[0], str)
                    and isinstance(e[1], (list, tuple)) and isinstance(e[2], str)
                    and isinstance(e[3], (list, tuple)) for e in value))


def pin_mismatches(actual, expected, *, rtol=1e-4, atol_scale=ATOL_SCALE, path="pin"):
    """
    The differences between a pinned structure and its expected value.

    Dicts, lists and tuples are walked; a list of ``fingerprint`` entries is
    compared by `fingerprint_mismatches` (``atol_scale``); any other float
    within ``rtol`` relative (header values such as DNNOISE are already rounded,
    losses printed to 6 digits); everything else (ints, booleans, strings)
    exactly.
    """
    if _is_fingerprint(expected) and _is_fingerprint(actual):
        return [f"{path}: {m}" for m in
                fingerprint_mismatches(actual, expected, atol_scale=atol_scale)]
    if isinstance(expected, dict) and isinstance(actual, dict):
        if sorted(actual) != sorted(expected):
            return [f"{path}: keys {sorted(actual)} != {sorted(expected)}"]
        return [m for k in sorted(expected) for m in
                pin_mismatches(actual[k], expected[k], rtol=rtol, atol_scale=atol_scale,
                               path=f"{path}[{k!r}]")]
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(actual) != len(expected):
            return [f"{path}: length {len(actual)} != {len(expected)}"]
        return [m for i, (a, e) in enumerate(zip(actual, expected)) for m in
                pin_mismatches(a, e, rtol=rtol, atol_scale=atol_scale, path=f"{path}[{i}]")]
    numbers = (isinstance(actual, (int, float, np.integer, np.floating))
               and isinstance(expected, (int, float, np.integer, np.floating))
               and not isinstance(actual, (bool, np.bool_))
               and not isinstance(expected, (bool, np.bool_)))
    if numbers and (isinstance(actual, (float, np.floating))
                    or isinstance(expected, (float, np.floating))):
        if abs(float(actual) - float(expected)) <= rtol * abs(float(expected)):
            return []
        return [f"{path}: {actual!r} != {expected!r} (rtol {rtol:g})"]
    if type(actual) is type(expected) and actual == expected:
        return []
    if numbers and actual == expected:
        return []
    return [f"{path}: {actual!r} != {expected!r}"]


def assert_pins_close(actual, expected, *, rtol=1e-4, atol_scale=ATOL_SCALE):
    """Assert `pin_mismatches` finds nothing (the message lists every difference)."""
    bad = pin_mismatches(actual, expected, rtol=rtol, atol_scale=atol_scale)
    assert not bad, "pinned values differ:\n  " + "\n  ".join(bad)
