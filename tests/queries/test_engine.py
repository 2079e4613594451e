"""The metric engine on synthetic lakes: values against direct computation, granularities, errors."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from layerlake.errors import LayerlakeError

from layerlake.errors import NotFoundError, SpecError
from layerlake.metrics import REGISTRY, MetricDef, get_metric
from layerlake.store import ArrayRef, ChunkReader

from .synth import build


@pytest.fixture
def synth(tmp_path):
    return build(tmp_path, n_docs=12, models={"model-a": (3, 8)})


@pytest.fixture
def two(tmp_path):
    return build(tmp_path, n_docs=10, models={"model-a": (3, 8), "model-b": (6, 12)})


def register(monkeypatch, **kw) -> MetricDef:
    defn = MetricDef(**kw)
    monkeypatch.setitem(REGISTRY, defn.name, defn)
    return defn


def test_doc_metric_is_the_mean_over_documents_of_the_function(synth):
    fn = get_metric("representation_dispersion").fn
    df = synth.lake.metric("representation_dispersion", dataset="ds")
    assert df.columns == ["model", "extraction", "dataset", "metric", "layer", "layer2", "value", "n", "std", "sem"]
    assert df["layer"].to_list() == [0, 1, 2, 3]
    for row in df.iter_rows(named=True):
        vals = np.array([fn(h) for h in synth.docs("model-a", row["layer"])])
        assert row["value"] == pytest.approx(vals.mean(), rel=1e-12)
        assert row["n"] == 12
        assert row["std"] == pytest.approx(vals.std(ddof=1), rel=1e-9)
        assert row["sem"] == pytest.approx(vals.std(ddof=1) / math.sqrt(12), rel=1e-9)
        assert row["model"] == "model-a" and row["dataset"] == "ds" and row["layer2"] is None


def test_per_doc_rows_in_dataset_order(synth):
    fn = get_metric("mean_norm").fn
    df = synth.lake.metric("mean_norm", dataset="ds", layers=[2], per="doc")
    assert df["ordinal"].to_list() == list(range(12))
    assert df["n"].to_list() == synth.tokens["model-a"]
    np.testing.assert_allclose(df["value"].to_numpy(), [fn(h) for h in synth.docs("model-a", 2)], rtol=1e-12)
    assert set(df["layer"].to_list()) == {2}


def test_nan_documents_are_left_out_of_the_mean(synth, monkeypatch):
    register(monkeypatch, name="t_nan_first", fn=lambda h: math.nan if h.shape[0] % 2 else float(h.shape[0]),
             input="doc_hidden", granularity="document")
    df = synth.lake.metric("t_nan_first", dataset="ds", layers=[0])
    even = [n for n in synth.tokens["model-a"] if n % 2 == 0]
    assert df["n"][0] == len(even)
    assert df["value"][0] == pytest.approx(np.mean(even))


def test_small_blocks_give_the_same_answer_with_bounded_reads(synth, monkeypatch):
    sizes = []
    real = ChunkReader.fill

    def spy(self, out, ref, src_start, src_stop, *a, **k):
        sizes.append(int((np.asarray(src_stop) - np.asarray(src_start)).sum()))
        return real(self, out, ref, src_start, src_stop, *a, **k)

    monkeypatch.setattr(ChunkReader, "fill", spy)
    big = synth.lake.metric("matrix_entropy", dataset="ds", layers=[1], cache=False)
    n_big = len(sizes)
    small = synth.lake.metric("matrix_entropy", dataset="ds", layers=[1], cache=False, block_bytes=8 * 4 * 12)
    assert small["value"][0] == pytest.approx(big["value"][0], rel=1e-12)
    assert len(sizes) - n_big > n_big
    assert max(sizes[n_big:]) <= max(12, max(synth.tokens["model-a"]))


def test_batched_twin_is_used_for_equal_length_documents(synth, monkeypatch):
    calls = {"one": 0, "batch": 0}

    def one(h):
        calls["one"] += 1
        return float(np.linalg.norm(h))

    def batch(hs):
        calls["batch"] += 1
        return np.linalg.norm(hs.reshape(hs.shape[0], -1), axis=1)

    register(monkeypatch, name="t_frob", fn=one, batched=batch, input="doc_hidden", granularity="document")
    df = synth.lake.metric("t_frob", dataset="ds", layers=[0], per="doc")
    np.testing.assert_allclose(df["value"].to_numpy(), [np.linalg.norm(h) for h in synth.docs("model-a", 0)],
                               rtol=1e-6)
    counts = np.bincount(synth.tokens["model-a"])
    assert calls["batch"] == int((counts >= 2).sum())
    assert calls["one"] == int((counts == 1).sum())


def test_pooled_input_is_the_masked_mean_per_document(synth, monkeypatch):
    seen = {}

    def grab(x):
        seen["x"] = x
        return float(x.shape[0])

    register(monkeypatch, name="t_pooled", fn=grab, input="pooled", granularity="layer")
    df = synth.lake.metric("t_pooled", dataset="ds", layers=[3])
    expected = np.stack([h.astype(np.float64).mean(axis=0) for h in synth.docs("model-a", 3)])
    assert seen["x"].dtype == np.float64
    np.testing.assert_allclose(seen["x"], expected, rtol=1e-12)
    assert df["n"][0] == 12 and df["std"][0] is None
    with pytest.raises(SpecError, match="per='layer'"):
        synth.lake.metric("t_pooled", dataset="ds", per="doc")


def test_token_cloud_subsample_is_seeded_and_shared_by_layers(synth, monkeypatch):
    seen = []
    register(monkeypatch, name="t_cloud", fn=lambda x: seen.append(x) or float(x.shape[0]), input="token_cloud",
             granularity="layer")
    total = sum(synth.tokens["model-a"])
    df = synth.lake.metric("t_cloud", dataset="ds", layers=[0, 1])
    assert df["n"].to_list() == [total, total]
    np.testing.assert_array_equal(seen[0], np.concatenate(synth.docs("model-a", 0)))
    df = synth.lake.metric("t_cloud", dataset="ds", layers=[0, 1], max_tokens=10)
    assert df["n"].to_list() == [10, 10]
    all0, all1 = np.concatenate(synth.docs("model-a", 0)), np.concatenate(synth.docs("model-a", 1))
    rows0 = [int(np.where((all0 == r).all(axis=1))[0][0]) for r in seen[-2]]
    rows1 = [int(np.where((all1 == r).all(axis=1))[0][0]) for r in seen[-1]]
    assert rows0 == rows1 == sorted(rows0)


def test_layer_pairs_consecutive_and_explicit(synth):
    cka = get_metric("linear_cka").fn
    df = synth.lake.metric("linear_cka", dataset="ds")
    assert list(zip(df["layer"], df["layer2"])) == [(0, 1), (1, 2), (2, 3)]
    x, y = np.concatenate(synth.docs("model-a", 1)), np.concatenate(synth.docs("model-a", 2))
    assert df["value"][1] == pytest.approx(cka(x, y), rel=1e-10)
    assert df["n"][1] == x.shape[0]
    df = synth.lake.metric("linear_cka", dataset="ds", pairs=[(0, 3)], rows="pooled")
    px = np.stack([h.mean(axis=0, dtype=np.float64) for h in synth.docs("model-a", 0)])
    py = np.stack([h.mean(axis=0, dtype=np.float64) for h in synth.docs("model-a", 3)])
    assert (df["layer"][0], df["layer2"][0]) == (0, 3)
    assert df["value"][0] == pytest.approx(cka(px, py), rel=1e-10)
    df = synth.lake.metric("layer_cosine", dataset="ds", layers=[0, 2, 3])
    assert list(zip(df["layer"], df["layer2"])) == [(0, 2), (2, 3)]


def test_cka_between_two_models_by_index_and_by_depth(two):
    cka = get_metric("linear_cka").fn
    pooled = {m: {l: np.stack([h.mean(axis=0, dtype=np.float64) for h in two.docs(m, l)])
                  for l in two.layers[m]} for m in ("model-a", "model-b")}
    df = two.lake.metric("linear_cka", dataset="ds", model=["model-a", "model-b"])
    assert list(zip(df["layer"], df["layer2"])) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert df["model2"].unique().to_list() == ["model-b"]
    assert df["value"][2] == pytest.approx(cka(pooled["model-a"][2], pooled["model-b"][2]), rel=1e-10)
    df = two.lake.metric("linear_cka", dataset="ds", model=["model-a", "model-b"], match="depth", layers=[1, 3])
    assert list(zip(df["layer"], df["layer2"])) == [(1, 2), (3, 6)]  # round(l * 6 / 3)
    assert df["value"][1] == pytest.approx(cka(pooled["model-a"][3], pooled["model-b"][6]), rel=1e-10)
    with pytest.raises(SpecError, match="tokenise"):
        two.lake.metric("linear_cka", dataset="ds", model=["model-a", "model-b"], rows="tokens")
    per_model = two.lake.metric("linear_cka", dataset="ds", model=["model-a", "model-b"], across="layers")
    assert per_model.group_by("model").len().sort("model")["len"].to_list() == [3, 6]


def test_model_none_means_every_model_of_the_dataset(two):
    df = two.lake.metric("mean_norm", dataset="ds")
    assert df.group_by("model", maintain_order=True).len().rows() == [("model-a", 4), ("model-b", 7)]
    one = two.lake.metric("mean_norm", dataset="ds", model="model-b", layers=[6])
    assert one.rows() == df.filter((pl.col("model") == "model-b") & (pl.col("layer") == 6)).rows()


def test_trajectory_metric_one_row_per_model(synth):
    fn = get_metric("line_shape_score").fn
    df = synth.lake.metric("line_shape_score", dataset="ds")
    assert df.height == 1 and df["layer"][0] is None
    per_doc = [fn(np.stack([synth.doc("model-a", l, i) for l in range(4)])) for i in range(12)]
    assert df["value"][0] == pytest.approx(np.mean(per_doc), rel=1e-12)
    sub = synth.lake.metric("line_shape_score", dataset="ds", layers=[0, 2, 3], per="doc")
    expect = [fn(np.stack([synth.doc("model-a", l, i) for l in (0, 2, 3)])) for i in range(12)]
    np.testing.assert_allclose(sub["value"].to_numpy(), expect, rtol=1e-12)


def test_perplexity_from_stored_losses(synth):
    from .synth import nll
    df = synth.lake.metric("perplexity", dataset="ds", per="doc")
    expect = []
    for i, n in enumerate(synth.tokens["model-a"]):
        x = nll(i, n).astype(np.float64)
        expect.append(math.exp(x[np.isfinite(x)].mean()))
    np.testing.assert_allclose(df["value"].to_numpy(), expect, rtol=1e-12)
    assert df["n"].to_list() == [n - 1 for n in synth.tokens["model-a"]]
    assert synth.lake.metric("perplexity", dataset="ds", layers=[1])["layer"].to_list() == [None]


def test_views_input(tmp_path, monkeypatch):
    s = build(tmp_path, n_docs=8, views=3)
    seen = []
    register(monkeypatch, name="t_views", fn=lambda v: seen.append(v) or float(v.shape[1]), input="views",
             granularity="layer")
    register(monkeypatch, name="t_two_views", fn=lambda v: float(v.shape[1]), input="views", granularity="layer",
             n_views=2)
    df = s.lake.metric("t_views", dataset="ds", layers=[1])
    assert seen[-1].shape == (8, 3, 8) and df["n"][0] == 8
    s.lake.metric("t_views", dataset="ds", layers=[1], views=[0, 2])
    orig = np.stack([h.mean(axis=0, dtype=np.float64) for h in s.docs("model-a", 1, range(8))])
    np.testing.assert_allclose(seen[-1][:, 0], orig, rtol=1e-12)  # view 0 = the original text
    assert np.abs(seen[-1][:, 1] - orig).max() < 0.2  # view 2 = original + small noise
    assert s.lake.metric("t_two_views", dataset="ds", layers=[1])["value"][0] == 2.0
    with pytest.raises(SpecError, match="stores 3"):
        s.lake.metric("t_views", dataset="ds", views=4)
    # other metrics see the originals only
    assert s.lake.metric("mean_norm", dataset="ds", layers=[0])["n"][0] == 8


def test_views_metric_on_a_dataset_without_views(synth, monkeypatch):
    register(monkeypatch, name="t_views2", fn=lambda v: 0.0, input="views", granularity="layer")
    with pytest.raises(SpecError, match="augment"):
        synth.lake.metric("t_views2", dataset="ds")


def test_errors_name_what_is_valid(synth):
    with pytest.raises(NotFoundError, match="valid metrics: .*mean_norm"):
        synth.lake.metric("no_such_metric", dataset="ds")
    with pytest.raises(SpecError, match="valid parameters: \\['centre', 'eps'\\]"):
        synth.lake.metric("coding_length_entropy", dataset="ds", epsilon=1)
    with pytest.raises(SpecError, match="do not apply"):
        synth.lake.metric("mean_norm", dataset="ds", pairs=[(0, 1)])
    with pytest.raises(LayerlakeError, match="(?i)jacobian"):  # no sketches stored: says how to get them
        synth.lake.metric("coupling", dataset="ds")
    with pytest.raises(SpecError, match="executor"):
        synth.lake.metric("mean_norm", dataset="ds", executor="ray")
    with pytest.raises(NotFoundError, match="stored layers: \\[0, 1, 2, 3\\]"):
        synth.lake.metric("mean_norm", dataset="ds", layers=[7])
    with pytest.raises(NotFoundError, match="no dataset"):
        synth.lake.metric("mean_norm", dataset="nope")
    with pytest.raises(SpecError, match="per="):
        synth.lake.metric("mean_norm", dataset="ds", per="token")


def test_metric_returning_an_array_is_refused(synth, monkeypatch):
    register(monkeypatch, name="t_array", fn=lambda h: h.mean(axis=0), input="doc_hidden", granularity="document")
    with pytest.raises(SpecError, match="shape"):
        synth.lake.metric("t_array", dataset="ds", layers=[0])


@pytest.fixture(scope="module")
def rich_lake(tmp_path_factory):
    """Six blocks, views, losses: every input kind can be served."""
    return build(tmp_path_factory.mktemp("rich"), n_docs=14, models={"model-r": (6, 12)}, views=2)


ENGINE_KINDS = ("doc_hidden", "doc_nll", "pooled", "token_cloud", "views", "layer_pair", "doc_trajectory")


@pytest.mark.parametrize("name", sorted(n for n, d in REGISTRY.items() if d.input != "jacobian_sketch"))
def test_every_registered_metric_runs_through_the_engine(rich_lake, name):
    defn = REGISTRY[name]
    assert defn.input in ENGINE_KINDS
    df = rich_lake.lake.metric(name, dataset="ds", layers=[0, 1, 2, 3, 4, 5, 6])
    expected = {"doc_nll": 1, "doc_trajectory": 1, "layer_pair": 6}.get(defn.input, 7)
    assert df.height == expected
    assert df["value"].dtype == pl.Float64 and df["n"].min() > 0
    again = rich_lake.lake.explain_metric(name, dataset="ds", layers=[0, 1, 2, 3, 4, 5, 6])
    assert again.units["status"].unique().to_list() == ["cached"]


def test_scattered_documents_are_read_in_one_range_per_shard(tmp_path, monkeypatch):
    s = build(tmp_path, n_docs=20, docs_per_shard=20)
    store = s.lake.store
    table = store.dataset_table("ds")
    store.write_dataset("odd", table.drop_columns(["ordinal"]).take(list(range(1, 20, 2))))
    store.link_dataset("odd", s.eids["model-a"], {"model": "model-a"})
    calls = []
    real = ChunkReader.fill
    monkeypatch.setattr(ChunkReader, "fill", lambda self, out, ref, a, b, *r, **k: calls.append(
        (np.asarray(a), np.asarray(b))) or real(self, out, ref, a, b, *r, **k))
    with s.lake.track_reads() as total:
        df = s.lake.metric("mean_norm", dataset="odd", layers=[1], per="doc")
    assert len(calls) == 1 and len(calls[0][0]) == 10  # one read of the shard for the ten wanted documents
    sid = store.locate(s.eids["model-a"], table.column("doc_hash").to_pylist()[:1], 1).column("shard")[0].as_py()
    arr = store.reader.array(ArrayRef.hidden(s.eids["model-a"], sid, 1))
    cr = arr.chunks[0]
    wanted = {r // cr for a, b in zip(*calls[0]) for r in range(int(a), int(b))}
    assert total.chunks == len(wanted) > 0  # each chunk holding a wanted row is decoded once
    fn = get_metric("mean_norm").fn
    np.testing.assert_allclose(df["value"].to_numpy(), [fn(h) for h in s.docs("model-a", 1, range(1, 20, 2))],
                               rtol=1e-12)
