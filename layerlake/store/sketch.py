"""Identity and test matrices of stored Jacobian sketches (METRICS.md 8.3).

A sketch key names one :class:`JacobianSketch` identity (k, l, positions, seed,
exact); shards store ``jacobian.zarr/<key>/layer_<l>/{Y, W, rows[, J]}``. The
Gaussian test matrices ``Omega`` ``[d, k]`` and ``Psi`` ``[d, l]`` are shared by
every token and layer of a key and are regenerated from their seeds, never
stored: the generator below is fully specified (PCG64 raw 64-bit words from a
``SeedSequence``, Box-Muller, rounded to float32), so it does not depend on
numpy's distribution algorithms. The SHA-256 of each matrix's float32 bytes is
stored with the sketch, and readers check it (:func:`check_test_matrix`).

Numpy only: both ``ingest`` (which writes sketches) and ``queries`` (which
rebuilds Jacobians from them) use this module.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..errors import IntegrityError
from .hashing import json_hash
from .specs import JacobianSketch

OMEGA_STREAM = 0
PSI_STREAM = 1
GENERATOR = "layerlake-gaussian-v1: PCG64(SeedSequence([seed, stream])) raw words, Box-Muller cos, float32"
SKETCH_FORMAT = 1


def sketch_key(sketch: JacobianSketch) -> str:
    """Short content hash of the sketch identity (layers excluded), e.g. ``"j3f9c0a1b2c4d"``."""
    return "j" + json_hash(sketch.identity(), 12)


def gaussian(seed: int, stream: int, shape: tuple[int, int]) -> np.ndarray:
    """Standard Gaussian ``[rows, cols]`` (float32 values held as float64), fully reproducible.

    Box-Muller on uniforms built from PCG64's raw 64-bit words (53 bits each);
    the bit stream of PCG64 + SeedSequence is stable across numpy versions.
    """
    n = int(np.prod(shape))
    bits = np.random.PCG64(np.random.SeedSequence([int(seed), int(stream)])).random_raw(2 * n)
    u = (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    u1 = 1.0 - u[0::2]  # (0, 1]
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u[1::2])
    return z.astype(np.float32).astype(np.float64).reshape(shape)


def sketch_matrices(d: int, k: int, l: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``Omega`` ``[d, k]`` and ``Psi`` ``[d, l]`` of a sketch (float32 values, float64 arrays)."""
    return gaussian(seed, OMEGA_STREAM, (d, k)), gaussian(seed, PSI_STREAM, (d, l))


def matrix_digest(m: np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) of a test matrix's float32 bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(m, dtype=np.float32).tobytes()).hexdigest()[:16]


def sketch_attrs(sketch: JacobianSketch, d: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Attributes stored with every sketch group (and in the shard manifest)."""
    omega, psi = sketch_matrices(d, sketch.k, sketch.l, sketch.seed)
    return {
        "format": SKETCH_FORMAT,
        "key": sketch_key(sketch),
        **sketch.identity(),
        "d": int(d),
        "generator": GENERATOR,
        "omega": {"seed": [sketch.seed, OMEGA_STREAM], "shape": [d, sketch.k], "sha256": matrix_digest(omega)},
        "psi": {"seed": [sketch.seed, PSI_STREAM], "shape": [d, sketch.l], "sha256": matrix_digest(psi)},
        "arrays": ({"Q": "orth((Jres Jres^T)^q Jres Omega) [n, d, k]", "B": "Q^T Jres [n, k, d]"}
                   if sketch.power_iterations else
                   {"Y": "Jres @ Omega [n, d, k]", "W": "Psi.T @ Jres [n, l, d]"})
        | {"rows": "shard token row [n]", "J": "full block Jacobian J (not J - I) [n, d, d], only when exact"},
        **(extra or {}),
    }


def check_test_matrix(attrs: dict[str, Any], which: str) -> np.ndarray:
    """Regenerate ``Omega`` or ``Psi`` from stored attrs and check its digest."""
    info = attrs[which]
    seed, stream = info["seed"]
    rows, cols = info["shape"]
    m = gaussian(seed, stream, (rows, cols))
    if matrix_digest(m) != info["sha256"]:
        raise IntegrityError(
            f"sketch {attrs.get('key')}: regenerated {which} (seed {info['seed']}, {rows}x{cols}) does not match the "
            f"stored digest {info['sha256']}; the test-matrix generator differs on this platform, so the sketch "
            "cannot be decoded here — re-ingest with exact=True or on the platform that wrote it"
        )
    return m
