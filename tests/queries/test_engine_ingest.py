"""The engine on lakes written by a real (tiny) model, and augmented views at ingest."""

from __future__ import annotations

import numpy as np
import pytest

from layerlake.cli import main
from layerlake.ingest import views as views_mod
from layerlake.metrics import REGISTRY, MetricDef, get_metric


def fake_augment(text: str, n_views: int, seed: int) -> list[str]:
    """Stands in for layerlake.ingest.augment.augment_views (same signature)."""
    out = []
    for i in range(n_views):
        words = text.split()
        k = (seed + i) % len(words)
        words[k] = words[k][::-1] + "~"
        out.append(" ".join(words))
    if text.startswith("Same"):
        out[-1] = text  # an augmentation equal to its original is skipped
    return out


@pytest.fixture
def fake_views(monkeypatch):
    monkeypatch.setattr(views_mod, "load_augment", lambda: fake_augment)


def per_doc_vectors(lake, dataset, layer):
    toks = lake.tokens(dataset).collect()
    vecs = lake.read_vectors(dataset, layers=[layer])[0]
    out, start = [], 0
    for _, g in toks.group_by("ordinal", maintain_order=True):
        out.append(vecs[start:start + g.height])
        start += g.height
    return out


def test_metric_on_a_real_tiny_model_matches_read_vectors(lake, tiny_gpt2, corpus):
    lake.ingest(tiny_gpt2, corpus[:6], dataset="d", max_length=16, overflow="window")
    fn = get_metric("representation_dispersion").fn
    df = lake.metric("representation_dispersion", dataset="d")
    assert df["layer"].to_list() == [0, 1, 2, 3]
    for layer in (0, 3):
        docs = per_doc_vectors(lake, "d", layer)
        assert df.filter(df["layer"] == layer)["value"][0] == pytest.approx(np.mean([fn(h) for h in docs]),
                                                                            rel=1e-12)
    per_doc = lake.metric("representation_dispersion", dataset="d", per="doc", layers=[0])
    n_tokens = lake.docs("d").collect()["n_tokens"].to_list()
    assert per_doc["n"].to_list() == n_tokens and max(n_tokens) > 16  # several windows per document
    ppl = lake.metric("perplexity", dataset="d", per="doc")
    toks = lake.tokens("d").collect()
    nll = [g["nll"].drop_nulls().to_numpy() for _, g in toks.group_by("ordinal", maintain_order=True)]
    np.testing.assert_allclose(ppl["value"].to_numpy(), [np.exp(x.astype(np.float64).mean()) for x in nll],
                               rtol=1e-6)


def test_ingest_with_augmented_views(lake, tiny_gpt2, corpus, fake_views, monkeypatch):
    texts = corpus[:5] + ["Same text twice over, nothing else here."]
    res = lake.ingest(tiny_gpt2, texts, dataset="aug", max_length=32, augment=2, augment_seed=3)
    table = lake.docs("aug").collect()
    assert res.n_docs == 6 + 2 * 6 - 1
    assert table["view"].to_list() == [0] * 6 + [1, 2] * 5 + [1]
    originals = table.filter(table["view"] == 0)
    assert originals["group"].to_list() == originals["doc_hash"].to_list()
    views = table.filter(table["view"] > 0)
    assert set(views["group"]) <= set(originals["doc_hash"])
    assert views["text"][0] == fake_augment(texts[0], 2, 3)[0]
    again = lake.ingest(tiny_gpt2, texts, dataset="aug", max_length=32, augment=2, augment_seed=3)
    assert again.nothing_computed

    seen = []
    monkeypatch.setitem(REGISTRY, "t_views", MetricDef(name="t_views", fn=lambda v: seen.append(v) or 0.0,
                                                       input="views", granularity="layer"))
    df = lake.metric("t_views", dataset="aug", layers=[1])
    assert seen[-1].shape == (5, 2, 64) and df["n"][0] == 5  # the text with a missing view is left out
    assert lake.metric("mean_norm", dataset="aug", layers=[1])["n"][0] == 6  # originals only


def test_cli_ingest_augment_flag(tmp_path, tiny_gpt2, corpus, fake_views, capsys):
    data = tmp_path / "c.txt"
    data.write_text("\n".join(corpus[:3]))
    code = main(["ingest", str(tiny_gpt2), str(data), "--lake", str(tmp_path / "lk"), "--dataset", "c",
                 "--max-length", "16", "--augment", "2"])
    assert code == 0
    import layerlake as ll
    table = ll.Lake(tmp_path / "lk").docs("c").collect()
    assert table.height == 9 and sorted(set(table["view"])) == [0, 1, 2]


def test_augment_rejects_a_corpus_with_view_columns(lake, tiny_gpt2, fake_views):
    from layerlake.errors import SpecError
    with pytest.raises(SpecError, match="group"):
        lake.ingest(tiny_gpt2, [{"text": "some words here", "group": "x"}], dataset="bad", augment=2)
