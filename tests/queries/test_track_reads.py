"""One read path: every array read (vectors, metrics, Jacobian sketches) is counted, with one error rule."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import layerlake as ll
from layerlake.errors import IntegrityError, LakeIOError, NotFoundError
from layerlake.store import arrays

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world, said the program.",
         "Another document that is a bit longer than the others, for sure.",
         "A fourth one, so that the shards hold a few documents each."]


@pytest.fixture(scope="module")
def jlake(tmp_path_factory, tiny_gpt2):
    """Two shards, small chunks (2 KiB: 16 hidden rows, 2 sketch rows), so reads span many chunks."""
    mp = pytest.MonkeyPatch()
    defaults = list(arrays.write_array.__defaults__)
    defaults[-1] = 2 << 10
    mp.setattr(arrays.write_array, "__defaults__", tuple(defaults))
    try:
        lake = ll.Lake(tmp_path_factory.mktemp("reads") / "lake")
        for i in (0, 2):
            lake.ingest(str(tiny_gpt2), TEXTS[i:i + 2], dataset=f"part{i}", layers=[0, 1, 2],
                        jacobian=ll.JacobianSketch(k=4, positions="all", layers=(1, 2)))
        lake.store.write_dataset("d", pa.concat_tables(
            [lake.store.dataset_table(f"part{i}").drop_columns(["ordinal"]) for i in (0, 2)]))
        lake.store.link_dataset("d", lake.extraction_id("part0"), {"model": str(tiny_gpt2)})
    finally:
        mp.undo()
    return lake


def _chunk_files(root: Path, pattern: str) -> list[Path]:
    return [p for p in root.glob(pattern) if p.is_file() and "c" in p.relative_to(root).parts]


def test_cold_metric_counts_the_same_chunks_as_read_vectors(jlake):
    root = Path(jlake.store.fs.root)
    files = _chunk_files(root, "extractions/*/shards/*/hidden.zarr/layer_1/**/*")
    with jlake.track_reads() as vec:
        v = jlake.read_vectors("d", layers=1)
    with jlake.track_reads() as met:
        jlake.metric("mean_norm", dataset="d", layers=[1], per="doc", cache=False)
    assert len({p.relative_to(root).parts[3] for p in files}) == 2  # two shards
    assert vec.chunks == len(files) >= 8 and vec.bytes_read == sum(p.stat().st_size for p in files)
    assert (met.chunks, met.bytes_read, met.rows) == (vec.chunks, vec.bytes_read, v.shape[0])
    assert met.scans >= 1 and jlake.last_query_stats()["chunks"] > 0
    jlake.metric("mean_norm", dataset="d", layers=[1], per="doc")  # computes and caches
    with jlake.track_reads() as hit:
        jlake.metric("mean_norm", dataset="d", layers=[1], per="doc")
    assert hit.chunks == 0 and hit.bytes_read == 0


def test_jacobians_count_the_sketch_chunks_they_read(jlake):
    root = Path(jlake.store.fs.root)
    files = [p for name in ("rows", "Y", "W")
             for p in _chunk_files(root, f"extractions/*/shards/*/jacobian.zarr/*/layer_1/{name}/**/*")]
    with jlake.track_reads() as jac:
        js = jlake.jacobians("d", layer=1)
    assert len(js) == jlake.read_vectors("d", layers=1).shape[0]  # positions="all": every token is sketched
    assert jac.chunks == len(files) >= 3 * 8
    assert jac.bytes_read == sum(p.stat().st_size for p in files)
    assert jac.rows == 3 * len(js)  # rows, Y and W of every token
    with jlake.track_reads() as metric:
        jlake.metric("jacobian_coupling_score", dataset="d", K=3, cache=False)
    assert metric.chunks > 0 and metric.bytes_read > 0


def _fail_chunk_reads(monkeypatch):
    """Every chunk file read fails with EIO (tests run as root, where chmod 000 does not stop reads)."""
    import zarr.storage._local as local

    real = local._get

    def failing(path, prototype, byte_range):
        if "c" in Path(path).parts:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, prototype, byte_range)

    monkeypatch.setattr(local, "_get", failing)


def test_os_error_while_reading_a_chunk_is_an_io_error_not_damage(tmp_path, tiny_gpt2, monkeypatch):
    lake = ll.Lake(tmp_path / "lake")
    lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0, 1],
                jacobian=ll.JacobianSketch(k=4, positions=2, layers=(1,)))
    want = lake.read_vectors("d", layers=1)
    fresh = ll.Lake(tmp_path / "lake")
    _fail_chunk_reads(monkeypatch)
    reads = [lambda: fresh.read_vectors("d", layers=1),
             lambda: fresh.vectors("d", layers=[1]).collect(),
             lambda: fresh.metric("mean_norm", dataset="d", layers=[1], cache=False),
             lambda: fresh.jacobians("d", layer=1)]
    for read in reads:
        with pytest.raises(LakeIOError, match="Input/output error") as err:
            read()
        assert isinstance(err.value, OSError) and isinstance(err.value, ll.LayerlakeError)
        assert err.value.errno is None or err.value.errno == errno.EIO
        assert "damaged" not in str(err.value) and "re-ingest" not in str(err.value)
    monkeypatch.undo()
    np.testing.assert_array_equal(fresh.read_vectors("d", layers=1), want)  # nothing was marked damaged


def test_flipped_chunk_byte_is_still_damage(tmp_path, tiny_gpt2):
    lake = ll.Lake(tmp_path / "lake")
    lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0, 1])
    chunk = next(p for p in _chunk_files(Path(lake.store.fs.root), "extractions/*/shards/*/hidden.zarr/layer_1/**/*"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    fresh = ll.Lake(tmp_path / "lake")
    for read in (lambda: fresh.read_vectors("d", layers=1),
                 lambda: fresh.metric("mean_norm", dataset="d", layers=[1], cache=False)):
        with pytest.raises(IntegrityError, match="damaged or missing — run `layerlake verify`") as err:
            read()
        assert not isinstance(err.value, OSError)


def test_missing_documents_get_one_error_from_every_reader(tmp_path, tiny_gpt2):
    lake = ll.Lake(tmp_path / "lake")
    lake.ingest(str(tiny_gpt2), TEXTS[:2], dataset="both", layers=[0, 1])
    lake.ingest(str(tiny_gpt2), TEXTS[2:], dataset="first", layers=[0])
    messages = []
    for read in (lambda: lake.read_vectors("first", layers=1),
                 lambda: lake.vectors("first", layers=[1])):
        with pytest.raises(NotFoundError) as err:
            read()
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("2 document(s) of dataset 'first' have no layer 1 in extraction ")
    assert "--layers 1" in messages[0]
