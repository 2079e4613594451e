"""The same questions through SQL (DuckDB) and Polars give the same answers (Ibis-style shared suite)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

MODELS = ["tiny-gpt2", "tiny-llama"]


def _eid(lake, model: str) -> str:
    return lake.extraction_id("a", model)


def _sorted(df: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return df.sort(by)


@pytest.mark.parametrize("dataset", ["a", "b"])
def test_tokens_same_rows(plake, dataset):
    """lake.tokens == tokens joined to the dataset's documents in SQL (dedup across shards included)."""
    eid = plake.extraction_id(dataset, "tiny-gpt2")
    pol = plake.tokens(dataset, model="tiny-gpt2").collect()
    sql = plake.sql(
        """SELECT d.ordinal, t.doc_hash, t."window", t.position, t.token_id, t.token, t.nll, t.shard, t.row,
                  t.extraction
           FROM tokens t JOIN datasets d USING (doc_hash)
           WHERE d.dataset = $ds AND t.extraction = $eid
           ORDER BY d.ordinal, t."window", t.position""", {"ds": dataset, "eid": eid}).pl()
    assert pol.height == sql.height > 0
    assert_frame_equal(pol, sql.select(pol.columns), check_dtypes=False)


def test_tokens_have_no_duplicates_when_layers_were_added_later(plake):
    dup = plake.sql("""SELECT extraction, doc_hash, "window", position, count(*) n FROM tokens
                       GROUP BY ALL HAVING n > 1""").fetchall()
    assert dup == []
    n_docs = plake.sql("SELECT count(*) FROM docs WHERE extraction = $e", {"e": _eid(plake, "tiny-gpt2")}).fetchall()[0]
    assert n_docs == (24,)  # a and b share 8 documents, stored once


@pytest.mark.parametrize("model", MODELS)
def test_per_document_stats(plake, model):
    eid = _eid(plake, model)
    pol = (plake.tokens("a", model=model)
           .group_by("doc_hash").agg(pl.len().alias("n"), pl.col("nll").mean().alias("mean_nll"))
           .join(plake.docs("a").select("doc_hash", "topic"), on="doc_hash")
           .sort("doc_hash").collect())
    sql = plake.sql("""SELECT t.doc_hash, count(*) AS n, avg(t.nll) AS mean_nll, any_value(d.topic) AS topic
                       FROM tokens t JOIN datasets d USING (doc_hash)
                       WHERE d.dataset = 'a' AND t.extraction = $e GROUP BY t.doc_hash ORDER BY t.doc_hash""",
                    {"e": eid}).pl()
    assert_frame_equal(pol.select(sql.columns), sql, check_dtypes=False, abs_tol=1e-6)


def test_docs_token_counts(plake):
    pol = plake.docs("a", model="tiny-gpt2").select("doc_hash", "n_tokens").sort("doc_hash").collect()
    sql = plake.sql("""SELECT doc_hash, sum(n_tokens) AS n_tokens FROM docs JOIN datasets USING (doc_hash)
                       WHERE dataset = 'a' AND extraction = $e GROUP BY doc_hash ORDER BY doc_hash""",
                    {"e": _eid(plake, "tiny-gpt2")}).pl()
    assert_frame_equal(pol, sql, check_dtypes=False)


@pytest.mark.parametrize("model", MODELS)
def test_vectors_equal_exactly(plake, model):
    """Every vector of dataset a: lake.vectors == SQL dataset_vectors_<d> == read_vectors (bit for bit)."""
    eid = _eid(plake, model)
    d = plake.sql("SELECT d_model FROM extractions WHERE extraction = $e", {"e": eid}).fetchall()[0][0]
    pol = plake.vectors("a", model=model).collect()
    sql = plake.sql(f"""SELECT ordinal, doc_hash, "window", position, layer, vec FROM dataset_vectors_{d}
                        WHERE dataset = 'a' AND extraction = $e""", {"e": eid}).pl()
    keys = ["layer", "ordinal", "window", "position"]
    sql = sql.sort(keys)
    assert pol.select(keys + ["doc_hash"]).equals(sql.select(keys + ["doc_hash"]))
    assert pol.schema["vec"] == pl.Array(pl.Float32, d) and sql.schema["vec"] == pl.Array(pl.Float32, d)
    a, b = pol["vec"].to_numpy(), sql["vec"].to_numpy()
    np.testing.assert_array_equal(a, b)
    layers = pol["layer"].unique(maintain_order=True).to_list()
    arr = plake.read_vectors("a", model=model, layers=layers)
    np.testing.assert_array_equal(arr.reshape(-1, d), a)


def test_mixed_widths_list_relation_matches(plake):
    """``vectors`` mixes widths here (vec is a list); it holds the same numbers as vectors_<d>."""
    typ = plake.sql("SELECT typeof(vec) FROM vectors LIMIT 1").fetchall()[0][0]
    assert typ == "FLOAT[]"
    e = _eid(plake, "tiny-llama")
    lst = plake.sql("""SELECT doc_hash, position, vec FROM vectors WHERE extraction = $e AND layer = 1
                       ORDER BY doc_hash, position""", {"e": e}).pl()
    arr = plake.sql("""SELECT doc_hash, position, vec FROM vectors_32 WHERE extraction = $e AND layer = 1
                       ORDER BY doc_hash, position""", {"e": e}).pl()
    np.testing.assert_array_equal(np.stack(lst["vec"].to_list()), arr["vec"].to_numpy())


@pytest.mark.parametrize("model", MODELS)
def test_stored_vectors_keep_their_dtype(plake, model):
    """float32 extraction: exact float32; float16 extraction: values are float16-representable."""
    v = plake.read_vectors("a", model=model, layers=[1])
    if model == "tiny-gpt2":
        assert v.dtype == np.float32
    else:
        np.testing.assert_array_equal(v.astype(np.float16).astype(np.float32), v)


def test_mean_norm_by_layer_and_position(plake):
    e = _eid(plake, "tiny-gpt2")
    pol = (plake.vectors("a", model="tiny-gpt2")
           .with_columns(norm=pl.col("vec").arr.to_list().list.eval(pl.element().pow(2)).list.sum().sqrt())
           .group_by("layer", "position").agg(pl.col("norm").mean())
           .sort("layer", "position").collect())
    sql = plake.sql("""SELECT layer, position, avg(sqrt(array_inner_product(vec, vec))) AS norm
                       FROM dataset_vectors_64 WHERE dataset = 'a' AND extraction = $e
                       GROUP BY ALL ORDER BY layer, position""", {"e": e}).pl()
    assert_frame_equal(pol, sql, check_dtypes=False, rtol=1e-5)


def test_nearest_neighbours_by_cosine(plake):
    e = _eid(plake, "tiny-gpt2")
    layer = 2
    vecs = plake.vectors("a", model="tiny-gpt2", layers=[layer]).collect()
    q = vecs.row(5, named=True)
    m = vecs["vec"].to_numpy()
    qv = np.asarray(q["vec"], dtype=np.float64)
    cos = (m @ qv) / (np.linalg.norm(m, axis=1) * np.linalg.norm(qv))
    top_pol = (vecs.with_columns(pl.Series("cos", cos)).with_columns(r=pl.col("cos").round(5))
               .sort(["r", "doc_hash", "position"], descending=[True, False, False]).head(5))
    sql = plake.sql("""WITH q AS (SELECT vec FROM dataset_vectors_64 WHERE dataset = 'a' AND extraction = $e
                                  AND layer = $l AND doc_hash = $h AND position = $p)
                       SELECT v.doc_hash, v.position, array_cosine_similarity(v.vec, q.vec) AS cos
                       FROM dataset_vectors_64 v, q WHERE v.dataset = 'a' AND v.extraction = $e AND v.layer = $l
                       ORDER BY round(cos, 5) DESC, doc_hash, position LIMIT 5""",
                    {"e": e, "l": layer, "h": q["doc_hash"], "p": q["position"]}).pl()
    assert sql["doc_hash"].to_list()[0] == q["doc_hash"] and sql["position"][0] == q["position"]
    np.testing.assert_allclose(sql["cos"].to_numpy(), top_pol["cos"].to_numpy(), rtol=1e-5)
    assert sql.select("doc_hash", "position").rows() == top_pol.select("doc_hash", "position").rows()


def test_filters_agree(plake):
    """A filter on position/window/doc pushed into the scan returns the rows a post-filter would."""
    e = _eid(plake, "tiny-gpt2")
    docs = plake.docs("a").select("doc_hash").collect()["doc_hash"].to_list()[3:6]
    lf = plake.vectors("a", model="tiny-gpt2", layers=[0, 3])
    pushed = lf.filter(pl.col("doc_hash").is_in(docs) & (pl.col("position") < 5) & (pl.col("layer") == 3)).collect()
    full = lf.collect()
    post = full.filter(pl.col("doc_hash").is_in(docs) & (pl.col("position") < 5) & (pl.col("layer") == 3))
    assert_frame_equal(pushed, post)
    sql = plake.sql("""SELECT * FROM dataset_vectors_64 WHERE dataset='a' AND extraction=$e AND layer=3
                       AND doc_hash IN (SELECT unnest($docs)) AND position < 5
                       ORDER BY ordinal, position""", {"e": e, "docs": docs}).pl()
    assert_frame_equal(sql.select(pushed.columns), pushed)


def test_token_filters_and_projection(plake):
    """Filters on token text (read from tokens.parquet) and vec-free projections."""
    lf = plake.vectors("a", model="tiny-gpt2", layers=[1])
    tok = lf.select("token").collect()["token"].to_list()[7]
    got = lf.filter(pl.col("token") == tok).select("doc_hash", "position", "token").collect()
    want = plake.tokens("a", model="tiny-gpt2").filter(pl.col("token") == tok).select(
        "doc_hash", "position", "token").collect()
    assert_frame_equal(got, want)
    assert lf.select(pl.len()).collect().item() == plake.tokens("a", model="tiny-gpt2").select(pl.len()).collect().item()


def test_norm_column_is_the_norm_of_vec(plake):
    lf = plake.vectors("a", model="tiny-llama", layers=[0, 2])
    both = lf.select("norm", "vec").collect()
    want = np.linalg.norm(both["vec"].to_numpy().astype(np.float64), axis=1)
    np.testing.assert_allclose(both["norm"].to_numpy(), want, rtol=1e-6)
    only = lf.select("norm").collect()
    np.testing.assert_array_equal(only["norm"].to_numpy(), both["norm"].to_numpy())
    sql = plake.sql("""SELECT norm, sqrt(array_inner_product(vec, vec)) AS n2 FROM dataset_vectors_32
                       WHERE dataset = 'a' AND layer IN (0, 2) ORDER BY layer, ordinal, position""").pl()
    np.testing.assert_allclose(sql["norm"].to_numpy(), sql["n2"].to_numpy(), rtol=1e-5)
    np.testing.assert_array_equal(sql["norm"].to_numpy(), both["norm"].to_numpy())


@pytest.fixture(scope="module")
def full_a(plake):
    return plake.vectors("a", model="tiny-gpt2").collect()


def test_lazy_equals_eager_for_random_filters(plake, full_a):
    """Property: any conjunction of filters pushed into the scan == the same filter on the full frame."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    hashes = full_a["doc_hash"].unique(maintain_order=True).to_list()
    lf = plake.vectors("a", model="tiny-gpt2")

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(layers=st.sets(st.integers(0, 3), max_size=3), docs=st.sets(st.sampled_from(hashes), max_size=4),
           pos=st.one_of(st.none(), st.tuples(st.integers(0, 30), st.integers(0, 30))),
           cols=st.sets(st.sampled_from(["ordinal", "position", "token", "nll", "norm", "vec", "row"]), min_size=1),
           head=st.one_of(st.none(), st.integers(0, 50)))
    def check(layers, docs, pos, cols, head):
        cond = pl.lit(True)
        if layers:
            cond = cond & pl.col("layer").is_in(sorted(layers))
        if docs:
            cond = cond & pl.col("doc_hash").is_in(sorted(docs))
        if pos:
            cond = cond & pl.col("position").is_between(min(pos), max(pos))
        q = lf.filter(cond).select(sorted(cols))
        want = full_a.filter(cond).select(sorted(cols))
        if head is not None:
            q, want = q.head(head), want.head(head)
        assert_frame_equal(q.collect(), want)

    check()
