"""Ingest end to end with tiny models: stored values equal the model's, reuse, dtypes, windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

import layerlake as ll


def _reference(model_dir, input_ids, causal=True):
    cls = AutoModelForCausalLM if causal else AutoModel
    model = cls.from_pretrained(model_dir).eval()
    ids = torch.tensor([input_ids])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, labels=ids if causal else None)
    return [h[0].numpy() for h in out.hidden_states], (out.loss.item() if causal else None)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "neox"])
def test_stored_vectors_and_nll_equal_the_model(kind, tiny_models, lake, corpus):
    docs = corpus[:8]
    res = lake.ingest(str(tiny_models[kind]), docs, dataset="d", batch_tokens=512)
    assert res.computed_docs == 8 and res.n_docs == 8
    toks = lake.tokens("d").collect()
    vecs = lake.read_vectors("d")
    assert vecs.shape[1] == toks.height and vecs.dtype == np.float32
    assert toks["ordinal"].is_sorted()
    causal = kind != "bert"
    start = 0
    for ordinal in range(3):
        doc = toks.filter(toks["ordinal"] == ordinal)
        ids = doc["token_id"].to_list()
        ref, loss = _reference(tiny_models[kind], ids, causal)
        for layer, h in enumerate(ref):
            got = vecs[layer, start:start + len(ids)]
            np.testing.assert_allclose(got, h, rtol=2e-3, atol=2e-3 * max(1.0, float(np.abs(h).max())))
        if causal:
            nll = doc["nll"].to_numpy()
            assert np.isnan(nll[0]) or doc["nll"][0] is None
            assert float(np.nanmean(nll.astype(np.float64))) == pytest.approx(loss, rel=1e-5, abs=1e-5)
        else:
            assert doc["nll"].is_null().all()
        start += len(ids)


def test_padding_is_never_a_row(tiny_gpt2, lake):
    docs = ["short one", "a somewhat longer document with many more tokens in it " * 3]
    lake.ingest(str(tiny_gpt2), docs, dataset="d")
    toks = lake.tokens("d").collect()
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    assert toks.height == sum(len(tok(d)["input_ids"]) for d in docs)
    assert "<pad>" not in toks["token"].to_list()


def test_second_ingest_computes_nothing_and_overlap_computes_only_new(tiny_gpt2, lake, corpus):
    first = lake.ingest(str(tiny_gpt2), corpus[:6], dataset="a")
    again = lake.ingest(str(tiny_gpt2), corpus[:6], dataset="a")
    assert again.nothing_computed and "nothing to compute" in again.summary()
    assert again.extraction_id == first.extraction_id
    shards_before = len(lake.store.commit_ids(first.extraction_id))
    assert len(lake.store.commit_ids(first.extraction_id)) == shards_before
    overlap = lake.ingest(str(tiny_gpt2), corpus[3:9], dataset="b")
    assert overlap.computed_docs == 3 and overlap.reused_docs == 3
    # dataset b comes back in its own order, including the documents computed for a
    tb = lake.tokens("b").collect()
    assert tb["doc_hash"].unique(maintain_order=True).to_list() == \
        lake.docs("b").collect()["doc_hash"].to_list()
    va = lake.read_vectors("a", layers=[2])
    vb = lake.read_vectors("b", layers=[2])
    ta = lake.tokens("a").collect()
    n_shared = ta.filter(ta["ordinal"] >= 3).height
    np.testing.assert_array_equal(va[0, -n_shared:], vb[0, :n_shared])


def test_different_capture_spec_or_model_is_a_new_extraction(tiny_models, lake, corpus):
    a = lake.ingest(str(tiny_models["gpt2"]), corpus[:3], dataset="d")
    b = lake.ingest(str(tiny_models["gpt2"]), corpus[:3], dataset="d", max_length=16)
    c = lake.ingest(str(tiny_models["gpt2"]), corpus[:3], dataset="d", dtype="float32")
    d = lake.ingest(str(tiny_models["llama"]), corpus[:3], dataset="d")
    assert len({a.extraction_id, b.extraction_id, c.extraction_id, d.extraction_id}) == 4
    assert not b.nothing_computed and not c.nothing_computed
    with pytest.raises(ll.SpecError, match="pass model="):
        lake.read_vectors("d")
    assert lake.read_vectors("d", model=str(tiny_models["llama"]), layers=[0]).shape[0] == 1
    assert lake.read_vectors("d", model=b.extraction_id, layers=1).ndim == 2
    with pytest.raises(ll.NotFoundError, match="valid models"):
        lake.tokens("d", model="no-such-model")


def test_more_layers_later_extends_the_same_extraction(tiny_gpt2, lake, corpus):
    a = lake.ingest(str(tiny_gpt2), corpus[:4], dataset="d", layers=[1])
    b = lake.ingest(str(tiny_gpt2), corpus[:4], dataset="d", layers=[1, 3])
    assert a.extraction_id == b.extraction_id and b.layers == [1, 3] and b.computed_docs == 4
    manifests = lake.store.shard_manifests(a.extraction_id)
    assert sorted(list(m.layers) for m in manifests) == [[1], [3]]
    assert lake.read_vectors("d", layers=[1, 3]).shape[0] == 2
    assert lake.ingest(str(tiny_gpt2), corpus[:4], dataset="d", layers=[3]).nothing_computed


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_storage_dtypes_round_trip_exactly(dtype, tiny_llama, lake, corpus):
    lake.ingest(str(tiny_llama), corpus[:2], dataset="d", dtype=dtype, layers=[2])
    toks = lake.tokens("d").collect()
    ids = toks.filter(toks["ordinal"] == 0)["token_id"].to_list()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        h = model(input_ids=torch.tensor([corpus_ids := ids]), output_hidden_states=True).hidden_states[2][0]
    want = h.to(getattr(torch, dtype)).float().numpy()
    got = lake.read_vectors("d", layers=2)[: len(corpus_ids)]
    if dtype == "float32":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:  # batched vs single forward may differ by float32 rounding before the cast
        assert np.mean(got == want) > 0.95


def test_float16_overflow_is_an_error_naming_the_layer(tmp_path, tiny_gpt2, corpus):
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(1e6)
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    lake = ll.Lake(tmp_path / "lake")
    with pytest.raises(ll.OverflowToInfError, match=r"layer 0 .*float16") as err:
        lake.ingest(model, corpus[:2], tokenizer=tok, dataset="d", model_name="big")
    assert "bfloat16" in str(err.value)
    assert lake.datasets() == []
    res = lake.ingest(model, corpus[:2], tokenizer=tok, dataset="d", model_name="big", dtype="bfloat16")
    assert np.isfinite(lake.read_vectors("d", layers=0)).all() and res.computed_docs == 2


def test_windows_and_truncation(tiny_gpt2, lake):
    long_doc = " ".join(f"word{i}" for i in range(300))
    res = lake.ingest(str(tiny_gpt2), [long_doc, "tiny"], dataset="t", max_length=32)
    assert res.truncated_docs == 1
    toks = lake.tokens("t").collect()
    assert toks.filter(toks["ordinal"] == 0).height == 32
    res = lake.ingest(str(tiny_gpt2), [long_doc, "tiny"], dataset="w", max_length=32, overflow="window", stride=4)
    toks = lake.tokens("w").collect()
    doc0 = toks.filter(toks["ordinal"] == 0)
    n_windows = doc0["window"].n_unique()
    assert n_windows > 5 and doc0.filter(doc0["window"] == 0).height == 32
    docs = lake.docs("w").collect()
    assert docs["n_windows"].to_list()[0] == n_windows
    with pytest.raises(ll.SpecError, match="max_length=32"):
        lake.ingest(str(tiny_gpt2), [long_doc], dataset="e", max_length=32, overflow="error")
    assert "e" not in lake.datasets()


def test_sources_keep_metadata(tmp_path, tiny_gpt2, lake):
    import pandas as pd
    import polars as pl

    rows = [{"text": f"document number {i} about things", "label": i % 2, "src": "x"} for i in range(4)]
    p_jsonl = tmp_path / "c.jsonl"
    p_jsonl.write_text("\n".join(__import__("json").dumps(r) for r in rows))
    pl.DataFrame(rows).write_parquet(tmp_path / "c.parquet")
    pl.DataFrame(rows).write_csv(tmp_path / "c.csv")
    (tmp_path / "c.txt").write_text("\n".join(r["text"] for r in rows) + "\n\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, r in enumerate(rows):
        (folder / f"{i}.txt").write_text(r["text"])
    import datasets

    sources = {"jsonl": p_jsonl, "parquet": tmp_path / "c.parquet", "csv": tmp_path / "c.csv",
               "polars": pl.DataFrame(rows), "pandas": pd.DataFrame(rows), "hf": datasets.Dataset.from_list(rows)}
    for name, src in sources.items():
        res = lake.ingest(str(tiny_gpt2), src, dataset=name)
        meta = lake.docs(name).collect()
        assert meta["label"].to_list() == [0, 1, 0, 1], name
        assert meta["text"].to_list() == [r["text"] for r in rows]
        assert res.n_docs == 4
    assert lake.ingest(str(tiny_gpt2), tmp_path / "c.txt", dataset="txt").nothing_computed
    assert lake.ingest(str(tiny_gpt2), folder, dataset="folder").nothing_computed
    assert lake.docs("folder").collect()["file"].to_list() == ["0.txt", "1.txt", "2.txt", "3.txt"]


def test_empty_documents_skipped_and_counted(tiny_gpt2, lake):
    res = lake.ingest(str(tiny_gpt2), ["one doc", "", "   ", "two doc", "one doc"], dataset="d")
    assert res.n_docs == 2 and res.skipped_empty == 2 and res.duplicates == 1
    assert "skipped 2 empty" in res.summary()


def test_model_object_with_tokenizer(tiny_llama, lake, corpus):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    a = lake.ingest(model, corpus[:2], tokenizer=tok, dataset="obj", model_name="my-llama")
    b = lake.ingest(str(tiny_llama), corpus[:2], dataset="path")
    assert a.extraction_id == b.extraction_id  # identity from content, not from how it was given
    assert lake.tokens("obj", model="my-llama").collect().height == lake.tokens("path").collect().height
