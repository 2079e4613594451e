"""One cache-key builder for every metric kind: equal parameter values hit one cache entry; explain plans all."""

from __future__ import annotations

import numpy as np
import pytest

import layerlake as ll
from layerlake.metrics import REGISTRY, get_metric
from layerlake.queries import metric_compute
from layerlake.queries.metric_plan import docs_fingerprint, key_params, unit_key

from .synth import build

LAYERS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    """Views and losses: every hidden-state input kind can be planned."""
    return build(tmp_path_factory.mktemp("keys"), n_docs=8, models={"model-k": (3, 8)}, views=2)


@pytest.fixture(scope="module")
def sketched(tmp_path_factory, tiny_gpt2, corpus):
    lake = ll.Lake(tmp_path_factory.mktemp("keys-jac") / "lake")
    lake.ingest(str(tiny_gpt2), corpus[:3], dataset="ds", max_length=24, jacobian=ll.JacobianSketch(k=6))
    return lake


def _lake(name, rich, sketched):
    return sketched if REGISTRY[name].input == "jacobian_sketch" else rich.lake


def _layers(name):
    return "all" if REGISTRY[name].input == "jacobian_sketch" else LAYERS


def _keys(lake, name, **params):
    plan = lake.explain_metric(name, dataset="ds", layers=_layers(name), **params)
    return plan.units["key"].to_list()


def _numeric_params(defn):
    """(name, int value, float value) of every int/float parameter, at a non-default integral value."""
    out = []
    for k, v in defn.params.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        value = 3 if v != 3 else 4
        out.append((k, value, float(value)))
    return out


NUMERIC = [(n, p, i, f) for n, d in sorted(REGISTRY.items()) for p, i, f in _numeric_params(d)]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_explain_metric_plans_every_registered_metric(rich, sketched, name):
    lake = _lake(name, rich, sketched)
    plan = lake.explain_metric(name, dataset="ds", layers=_layers(name), cache=False)
    units = plan.units
    assert units.height >= 1 and units["status"].to_list() == ["compute"] * units.height
    assert all(len(k) == 32 for k in units["key"]) and units["key"].n_unique() == units.height
    assert f"metric {name}@" in str(plan)
    assert plan.reads and all(r["bytes"] > 0 and r["tokens"] > 0 for r in plan.reads)
    if REGISTRY[name].input == "jacobian_sketch":
        assert {r["what"] for r in plan.reads} == {"jacobian.zarr"}
        assert "blocks [1, 2, 3]" in str(plan)


@pytest.mark.parametrize("name,param,as_int,as_float", NUMERIC, ids=[f"{n}-{p}" for n, p, _, _ in NUMERIC])
def test_int_and_float_of_one_value_give_one_key(rich, sketched, name, param, as_int, as_float):
    lake = _lake(name, rich, sketched)
    by_int = _keys(lake, name, **{param: as_int})
    assert by_int == _keys(lake, name, **{param: as_float})
    assert by_int == _keys(lake, name, **{param: np.float32(as_int)})  # numpy scalars too
    assert by_int == _keys(lake, name, **{param: str(as_int)})  # the CLI's --param strings
    assert by_int != _keys(lake, name)  # a non-default value is part of the key


@pytest.mark.parametrize("name,params", [
    ("prompt_entropy", ({"alpha": 2}, {"alpha": 2.0})),  # doc_hidden
    ("dataset_entropy", ({"alpha": 2.0}, {"alpha": 2})),  # pooled
    ("infonce", ({"tau": 1}, {"tau": 1.0})),  # views
    ("dataset_gride_id", ({"n1": 1, "n2": 3}, {"n1": 1.0, "n2": 3.0})),  # token_cloud, int parameters
])
def test_equal_values_hit_the_same_cache_entry(tmp_path, name, params):
    s = build(tmp_path, n_docs=8, models={"model-k": (2, 8)}, views=2)
    first = s.lake.metric(name, dataset="ds", layers=[1, 2], **params[0])
    files = sorted(s.lake.store.fs.listdir("metrics", s.eids["model-k"]))
    assert len(files) == 2
    with s.lake.track_reads() as stats:
        again = s.lake.metric(name, dataset="ds", layers=[1, 2], **params[1])
    assert (stats.chunks, stats.bytes_read) == (0, 0) and again.equals(first)
    assert sorted(s.lake.store.fs.listdir("metrics", s.eids["model-k"])) == files


def test_jacobian_metric_k_int_and_float_hit_the_same_cache_entry(sketched, monkeypatch):
    first = sketched.metric("coupling", dataset="ds", K=2)
    eid = first["extraction"][0]
    files = sorted(sketched.store.fs.listdir("metrics", eid))
    monkeypatch.setattr(metric_compute, "sketch_metric_rows", lambda *a, **k: pytest.fail("recomputed"))
    again = sketched.metric("coupling", dataset="ds", K=2.0)
    assert again.equals(first) and first.height == 9
    assert sorted(sketched.store.fs.listdir("metrics", eid)) == files
    assert sketched.explain_metric("coupling", dataset="ds", K="2").units["status"].to_list() == ["cached"]


def test_unit_key_is_built_from_content_and_canonical_non_default_params():
    defn = get_metric("prompt_entropy")
    docs = docs_fingerprint(["a", "b"])
    kw = dict(extraction="e1", docs=docs, options={}, unit={"layer": 3})
    key = unit_key(defn, params={"alpha": 2}, **kw)
    assert key == unit_key(defn, params={"alpha": 2.0}, **kw)
    assert key == unit_key(defn, params=defn.resolve_params({"alpha": 2}), **kw)
    assert unit_key(defn, params={}, **kw) == unit_key(defn, params={"alpha": 1}, **kw)  # defaults leave the key
    assert key_params(defn, {"alpha": 1, "variant": "clean"}) == {"variant": "clean"}
    assert key != unit_key(defn, params={"alpha": 2}, **{**kw, "docs": docs_fingerprint(["b", "a"])})
    assert key != unit_key(defn, params={"alpha": 2}, **{**kw, "unit": {"layer": 4}})
    assert key != unit_key(defn, params={"alpha": 2}, **{**kw, "extraction": "e2"})
    assert key != unit_key(get_metric("dataset_entropy"), params={"alpha": 2}, **kw)
