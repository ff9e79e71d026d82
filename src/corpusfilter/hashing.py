"""Stable 64-bit hashes of Arrow strings: the same on every machine and library version, numpy only
(no polars), so samples can be reproduced from ids and the repeated-id check stays light."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def stable_hash(keys: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A uint64 per string, from its UTF-8 bytes and ``seed`` (FNV-1a, then mixed): the same on every
    machine and library version, so a sample can be reproduced from the ids alone."""
    arr = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    arr = arr.cast(pa.large_string()).fill_null("")
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = (
        np.frombuffer(arr.buffers()[2], dtype=np.uint8)
        if arr.buffers()[2] is not None
        else np.zeros(1, np.uint8)
    )
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    seed_mix = _mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    h = np.full(n, np.uint64(0xCBF29CE484222325) ^ seed_mix, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    idx = np.arange(n)
    with np.errstate(over="ignore"):
        for p in range(int(lengths.max()) if n else 0):
            idx = idx[lengths[idx] > p]
            h[idx] = (h[idx] ^ data[starts[idx] + p].astype(np.uint64)) * prime
    return _mix64(h)
