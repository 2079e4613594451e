"""Reading rows of stored arrays for located document windows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import zarr

from ..errors import IntegrityError, NotFoundError
from .arrays import open_group, read_rows
from .catalog import LakeStore
from .safety import check_array


def layer_array(store: LakeStore, eid: str, shard: str, layer: int) -> zarr.Array:
    """The array of ``layer`` in a committed shard; unreadable metadata raises :class:`IntegrityError`."""
    where = store.fs.url_of("extractions", eid, "shards", shard, "hidden.zarr", f"layer_{layer}")
    try:
        group = open_group(store.fs, "extractions", eid, "shards", shard, "hidden.zarr")
        arr = group[f"layer_{layer}"]
    except KeyError:
        if layer in store.shard_layers(eid, shard):
            raise IntegrityError(f"{where} is missing though the shard's commit marker lists layer {layer}; "
                                 "run `layerlake verify`") from None
        raise NotFoundError(f"shard {shard} of extraction {eid} has no layer {layer}") from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # zarr refuses metadata it cannot parse (unknown codec, bad JSON, ...)
        raise IntegrityError(f"cannot open {where}: {type(exc).__name__}: {exc}; the array metadata is damaged "
                             "or missing — run `layerlake verify`") from None
    check_array(arr, where=where)
    return arr


def gather_rows(store: LakeStore, eid: str, locations: pa.Table, layer: int,
                arrays: dict[str, Any] | None = None) -> np.ndarray:
    """Vectors ``[sum n_tokens, d]`` of the located windows, in the table's order.

    ``locations`` has ``shard``, ``row_start`` and ``n_tokens`` columns (see
    :meth:`LakeStore.locate`). Only chunks overlapping the rows are read.
    """
    shards = locations.column("shard").to_pylist()
    starts = locations.column("row_start").to_pylist()
    counts = locations.column("n_tokens").to_pylist()
    total = int(sum(counts))
    by_shard: dict[str, list[tuple[int, int, int]]] = {}
    out_pos = 0
    for s, r0, n in zip(shards, starts, counts):
        by_shard.setdefault(s, []).append((r0, r0 + n, out_pos))
        out_pos += n
    out: np.ndarray | None = None
    for shard, pieces in by_shard.items():
        arr = arrays[shard] if arrays and shard in arrays else layer_array(store, eid, shard, layer)
        block = read_rows(arr, [(a, b) for a, b, _ in pieces], where=f"extraction {eid} shard {shard} layer {layer}")
        if out is None:
            out = np.empty((total,) + block.shape[1:], dtype=np.float32)
        pos = 0
        for a, b, dst in pieces:
            out[dst:dst + (b - a)] = block[pos:pos + (b - a)]
            pos += b - a
    if out is None:
        d = store.extraction(eid).d_model
        out = np.empty((0, d), dtype=np.float32)
    return out
