"""Corruption fuzz: damage one file of a lake, then every read path returns the original values or
raises IntegrityError. Never a shorter, longer or different answer.

The lake (tiny GPT-2 with nll, two shards, Jacobian sketches, a cached metric) is built once; each
trial copies it, damages one file (a flipped byte, a truncation or a deletion) of one kind, opens
the copy and runs every read path against the answers of the undamaged lake.
"""

from __future__ import annotations

import collections
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pytest

import layerlake as ll
from layerlake.errors import IntegrityError, NotFoundError

DATASET = "fz"
TRIALS = 64

# file kind -> how to recognise it (relative posix path inside the lake)
KINDS: dict[str, Callable[[str], bool]] = {
    "lake.json": lambda p: p == "lake.json",
    "extraction.json": lambda p: p.endswith("/extraction.json"),
    "alias": lambda p: "/aliases/" in p,
    "commit marker": lambda p: "/commits/" in p,
    "shard docs.parquet": lambda p: "/shards/" in p and p.endswith("/docs.parquet"),
    "shard tokens.parquet": lambda p: p.endswith("/tokens.parquet"),
    "hidden zarr.json": lambda p: "/hidden.zarr/" in p and p.endswith("zarr.json"),
    "hidden chunk": lambda p: "/hidden.zarr/" in p and "/c/" in p,
    "jacobian zarr.json": lambda p: "/jacobian.zarr/" in p and p.endswith("zarr.json"),
    "jacobian chunk": lambda p: "/jacobian.zarr/" in p and "/c/" in p,
    "dataset table": lambda p: p.startswith("datasets/") and p.endswith(".parquet"),
    "dataset link": lambda p: p.startswith("datasets/") and "/links/" in p,
    "metric cache": lambda p: p.startswith("metrics/"),
}


def _files(root: Path) -> dict[str, list[str]]:
    by_kind: dict[str, list[str]] = collections.defaultdict(list)
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.name == "writer.json":
            continue
        rel = f.relative_to(root).as_posix()
        for kind, match in KINDS.items():
            if match(rel):
                by_kind[kind].append(rel)
                break
    return by_kind


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    keys = [c for c in df.columns if df.schema[c] not in (pl.List, pl.Array) and not isinstance(
        df.schema[c], (pl.List, pl.Array, pl.Struct))]
    return df.sort(keys) if keys else df


READS: dict[str, Callable[[ll.Lake, Path], Any]] = {
    "sql tokens": lambda lk, _: _sorted(lk.sql("SELECT doc_hash, position, token_id, token, nll FROM tokens").pl()),
    "sql docs": lambda lk, _: _sorted(lk.sql("SELECT doc_hash, n_tokens, layers FROM docs").pl()),
    "sql datasets": lambda lk, _: _sorted(lk.sql("SELECT * EXCLUDE (dataset) FROM datasets").pl()),
    "sql extractions": lambda lk, _: lk.sql("SELECT extraction, d_model FROM extractions ORDER BY 1").pl(),
    "sql vectors": lambda lk, _: _sorted(lk.sql(
        "SELECT layer, doc_hash, position, vec FROM dataset_vectors WHERE dataset = 'fz'").pl()),
    "sql metrics": lambda lk, _: _sorted(lk.sql("SELECT metric, layer, value FROM metrics").pl()),
    "polars tokens": lambda lk, _: lk.tokens(DATASET).collect(),
    "polars vectors": lambda lk, _: lk.vectors(DATASET, layers=[1, 3]).collect(),
    "numpy": lambda lk, _: lk.read_vectors(DATASET),
    "cached metric": lambda lk, _: lk.metric("prompt_entropy", dataset=DATASET).select("layer", "value"),
    "fresh metric": lambda lk, _: lk.metric("dataset_entropy", dataset=DATASET, cache=False).select("layer", "value"),
    "jacobians": lambda lk, _: lk.jacobians(DATASET, layer=2).S,
    "export": lambda lk, tmp: _exported_values(lk, tmp),
}


def _exported_values(lake: ll.Lake, tmp: Path) -> Any:
    out = tmp / f"export-{random.random():.12f}"
    lake.export(DATASET, out)
    other = ll.Lake(tmp / f"imported-{random.random():.12f}")
    ll.import_lake(out, other)
    return other.read_vectors(DATASET), other.tokens(DATASET).collect()


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, pl.DataFrame):
        return isinstance(b, pl.DataFrame) and a.equals(b, null_equal=True)
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=True))


def _damage(path: Path, rng: random.Random) -> str:
    data = path.read_bytes()
    how = rng.choice(["flip", "flip", "flip", "truncate", "delete"]) if data else "delete"
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: rng.randrange(len(data))])
    else:
        i = rng.randrange(len(data))
        path.write_bytes(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:])
    return how


@pytest.fixture(scope="module")
def clean_lake(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2: Path, corpus: list[str]) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "lake"
    lake = ll.Lake(root)
    lake.ingest(str(tiny_gpt2), corpus[:8], dataset=DATASET, shard_bytes=1, batch_tokens=256,
                jacobian=ll.JacobianSketch(k=2, positions=1, layers=[2]))
    lake.metric("prompt_entropy", dataset=DATASET)
    assert lake.verify() == []
    return root


@pytest.mark.slow
def test_every_read_path_returns_the_original_or_raises(clean_lake: Path, tmp_path: Path) -> None:
    files = _files(clean_lake)
    missing = sorted(set(KINDS) - set(files))
    assert not missing, f"the fuzz lake has no file of kind {missing}"
    baseline = {name: read(ll.Lake(clean_lake), tmp_path) for name, read in READS.items()}
    rng = random.Random(20261203)
    tally: collections.Counter[str] = collections.Counter()
    silent: list[str] = []
    kinds = sorted(files)
    for trial in range(TRIALS):
        kind = kinds[trial % len(kinds)]
        rel = rng.choice(files[kind])
        work = tmp_path / f"t{trial}"
        shutil.copytree(clean_lake, work / "lake", symlinks=True)
        how = _damage(work / "lake" / rel, rng)
        expected = dict(baseline)
        if kind == "metric cache" and how == "delete":
            # the metric cache is a cache: a lake without one of its entries is a valid lake in which that unit
            # was never computed (or was evicted), indistinguishable from this one. The SQL `metrics` relation
            # then lists the other units only; every metric read recomputes the unit (its values are compared).
            gone = pl.read_parquet(clean_lake / rel).select("metric", "layer", "value")
            expected["sql metrics"] = baseline["sql metrics"].join(gone, on=["metric", "layer", "value"], how="anti")
        for name, read in READS.items():
            try:
                got = read(ll.Lake(work / "lake"), work)
            except IntegrityError:
                tally["IntegrityError"] += 1
                continue
            except NotFoundError:
                if kind == "dataset link" and how == "delete":
                    # ingest writes the dataset table, then the link (datasets/<name>/links/<eid>.json): a lake
                    # whose ingest stopped between the two is valid and looks exactly like this one (the table, the
                    # committed shards, no link). "Not ingested with that model" is then the true answer.
                    tally["NotFoundError"] += 1
                    continue
                silent.append(f"{kind} ({how} {rel}) -> {name}: NotFoundError")
                continue
            except Exception as exc:  # any other error (or a wrapped IntegrityError) is not the promised refusal
                silent.append(f"{kind} ({how} {rel}) -> {name}: {type(exc).__name__}: {exc}")
                continue
            if _equal(expected[name], got):
                tally["original"] += 1
            else:
                silent.append(f"{kind} ({how} {rel}) -> {name}: returned changed values")
        shutil.rmtree(work)
    print(f"\ncorruption fuzz: {TRIALS} trials over {len(kinds)} file kinds x {len(READS)} read paths: "
          f"{tally['original']} original, {tally['IntegrityError']} IntegrityError, "
          f"{tally['NotFoundError']} NotFoundError (deleted dataset link), {len(silent)} other")
    assert not silent, "\n".join(silent)
