"""Real weights: all-MiniLM-L6-v2 (BERT encoder) and SmolLM2-135M (Llama causal LM, GGUF)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

import layerlake as ll
from tests.models import SMOLLM_GGUF

pytestmark = pytest.mark.real_model


def test_minilm_vectors_equal_hidden_states(tmp_path, minilm, corpus):
    lake = ll.Lake(tmp_path / "lake")
    res = lake.ingest(minilm, corpus[:12], dataset="d", model_name="all-MiniLM-L6-v2", max_length=128)
    assert res.computed_docs == 12 and res.layers == list(range(7))
    toks = lake.tokens("d", model="all-MiniLM-L6-v2").collect()
    assert toks["token"][0] == "[CLS]"
    vecs = lake.read_vectors("d")
    model = AutoModel.from_pretrained(minilm).eval()
    start = 0
    for ordinal in range(4):
        ids = toks.filter(toks["ordinal"] == ordinal)["token_id"].to_list()
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        for layer, h in enumerate(hs):
            h = h[0].numpy()
            # float16 rounding: relative 2^-11 of each value, plus batched-vs-single float32 noise
            np.testing.assert_allclose(vecs[layer, start:start + len(ids)], h, rtol=1e-3, atol=2e-3)
        start += len(ids)
    assert lake.ingest(minilm, corpus[:12], dataset="d", model_name="all-MiniLM-L6-v2",
                       max_length=128).nothing_computed


@pytest.mark.slow
def test_smollm2_nll_and_massive_activations(tmp_path, smollm, corpus):
    lake = ll.Lake(tmp_path / "lake")
    docs = [c[:300] for c in corpus[:6]]
    res = lake.ingest(smollm, docs, dataset="d", gguf_file=SMOLLM_GGUF, layers="0,5,15,30", max_length=64)
    assert res.layers == [0, 5, 15, 30]
    toks = lake.tokens("d").collect()
    vecs = lake.read_vectors("d")
    assert np.isfinite(vecs).all()
    assert np.abs(vecs[2]).max() > 1e4  # SmolLM2's massive activations survive float16 storage
    model = AutoModelForCausalLM.from_pretrained(smollm, gguf_file=SMOLLM_GGUF).eval()
    doc = toks.filter(toks["ordinal"] == 0)
    ids = torch.tensor([doc["token_id"].to_list()])
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids, output_hidden_states=True)
    assert float(np.nanmean(doc["nll"].to_numpy().astype(np.float64))) == pytest.approx(out.loss.item(), rel=1e-4)
    n = ids.shape[1]
    for i, layer in enumerate([0, 5, 15, 30]):
        h = out.hidden_states[layer][0].numpy()
        np.testing.assert_allclose(vecs[i, :n], h, rtol=2e-3, atol=2e-3 * max(1.0, np.abs(h).max() / 100))
