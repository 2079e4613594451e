"""Jacobian sketches through lake.ingest: storage, reuse, bad input, CLI, SmolLM2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import layerlake as ll
from layerlake.errors import SpecError
from layerlake.store.sketch import sketch_key, sketch_matrices

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world.",
         "Another document that is a bit longer than the others, for sure, with commas."]


def _manifests(lake, eid):
    return [m.to_json() for m in lake.store.shard_manifests(eid)]  # as on disk


def test_ingest_stores_sketches_in_the_shard_and_reuses_them(lake, tiny_gpt2):
    spec = ll.JacobianSketch(k=3, positions="last", layers=(1, 3))
    r = lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0, 3], jacobian=spec)
    mans = _manifests(lake, r.extraction_id)
    assert len(mans) == 1
    key = sketch_key(spec)
    entry = mans[0]["jacobian"][key]
    assert entry["layers"] == [1, 3]
    attrs = entry["attrs"]
    assert (attrs["k"], attrs["l"], attrs["d"], attrs["seed"]) == (3, 7, 64, 0)
    assert attrs["final_norm_layers"] == [3]  # GPT-2's hidden_states[3] is ln_f(block 3)
    assert any(f.startswith("jacobian.zarr/") for f in mans[0]["files"])  # same atomic commit
    js = lake.jacobians("d", layer=1, K=2)
    toks = lake.tokens("d").collect()
    last = toks.group_by("doc_hash").agg(ll_pos=__import__("polars").col("position").max())
    want = dict(zip(last["doc_hash"], last["ll_pos"]))
    assert len(js) == 3
    assert [want[h] for h in js.tokens["doc_hash"]] == js.tokens["position"].to_list()
    assert js.tokens["ordinal"].to_list() == [0, 1, 2]  # dataset order
    assert js.U.shape == (3, 64, 2) and js.S.shape == (3, 2) and js.dense is None
    assert lake.verify() == []

    again = lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0, 3], jacobian=spec)
    assert again.nothing_computed
    # a different sketch of the same docs: only sketches are computed, no hidden layers are stored again
    spec2 = ll.JacobianSketch(k=2, positions=2, layers=(2,))
    third = lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0, 3], jacobian=spec2)
    assert third.computed_docs == 3
    new = [m for m in _manifests(lake, r.extraction_id) if sketch_key(spec2) in m["jacobian"]]
    assert len(new) == 1 and new[0]["layers"] == [] and new[0]["jacobian"][sketch_key(spec2)]["layers"] == [2]
    with pytest.raises(SpecError, match="2 kinds of sketches"):
        lake.jacobians("d", layer=1)
    js2 = lake.jacobians("d", layer=2, K=2, sketch=spec2)
    assert len(js2) == 6  # 2 sampled positions per document
    # more hidden layers later: no sketch is missing, the hidden layers are added
    fourth = lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", layers=[0, 1, 3], jacobian=spec)
    assert fourth.computed_docs == 3
    assert lake.jacobians("d", layer=1, K=2, sketch=spec).tokens["shard"].n_unique() == 1  # first shard wins


def test_sketches_match_a_second_ingest_bit_for_bit(tmp_path, tiny_llama):
    spec = ll.JacobianSketch(k=3, positions=(0, -1), layers=(2,))
    a = ll.Lake(tmp_path / "a")
    b = ll.Lake(tmp_path / "b")
    a.ingest(str(tiny_llama), TEXTS, dataset="d", layers=[0], jacobian=spec)
    b.ingest(str(tiny_llama), TEXTS[::-1], dataset="d", layers=[0], jacobian=spec, batch_tokens=16)
    ja, jb = a.jacobians("d", layer=2, K=3), b.jacobians("d", layer=2, K=3)
    pa = dict(zip(zip(ja.tokens["doc_hash"], ja.tokens["position"]), ja.S))
    pb = dict(zip(zip(jb.tokens["doc_hash"], jb.tokens["position"]), jb.S))
    assert pa.keys() == pb.keys()
    for k in pa:  # other batch composition / padding: the same Jacobian up to float32 rounding
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-4)


def test_bad_inputs_raise_before_compute(lake, tiny_gpt2, tiny_bert):
    with pytest.raises(SpecError, match=r"k=65 is larger than the hidden size d=64"):
        lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", jacobian=ll.JacobianSketch(k=65))
    with pytest.raises(SpecError, match=r"l=70 is larger than the hidden size d=64"):
        lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", jacobian=ll.JacobianSketch(k=8, l=70))
    with pytest.raises(SpecError, match=r"blocks are 1..3"):
        lake.ingest(str(tiny_gpt2), TEXTS, dataset="d", jacobian=ll.JacobianSketch(k=2, layers=(0, 1)))
    with pytest.raises(SpecError, match=r"position 20 is beyond document #0 \(.{12}\), which has 9 tokens"):
        lake.ingest(str(tiny_bert), TEXTS[1:], dataset="d", jacobian=ll.JacobianSketch(k=2, positions=(20,)))
    assert lake.datasets() == []
    for eid in lake.store.extraction_ids():
        assert lake.store.commit_ids(eid) == []


def test_model_whose_blocks_cannot_be_found(lake, tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2))
    model.transformer.h = torch.nn.Sequential(*model.transformer.h)  # still runs, but no ModuleList of blocks
    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    with pytest.raises(SpecError, match=r"cannot capture the blocks of GPT2LMHeadModel.*drop --jacobian-k"):
        lake.ingest(model, TEXTS, tokenizer=tok, model_name="odd", dataset="d", jacobian=ll.JacobianSketch(k=2))
    assert lake.datasets() == []


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "layerlake", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_cli_jacobian_flags(tmp_path, tiny_neox):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    lake_dir = tmp_path / "lake"
    ok = _cli("ingest", str(tiny_neox), str(corpus), "--lake", str(lake_dir), "--dataset", "c", "--layers", "0",
              "--jacobian-k", "3", "--jacobian-l", "5", "--jacobian-positions", "0,-1", "--jacobian-layers", "2,3",
              "--jacobian-power", "1")
    assert ok.returncode == 0, ok.stderr
    js = ll.Lake(lake_dir).jacobians("c", layer=3, K=3)
    assert len(js) == 6 and js.attrs["l"] == 5 and js.attrs["positions"] == [0, -1]
    assert js.attrs["power_iterations"] == 1
    bad = _cli("ingest", str(tiny_neox), str(corpus), "--lake", str(lake_dir), "--jacobian-k", "100")
    assert bad.returncode == 2
    assert "k=100 is larger than the hidden size d=64" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="session")
def tiny_neox(tiny_models):
    return tiny_models["neox"]


@pytest.mark.slow
def test_smollm2_sketch_agrees_with_jacrev(smollm):
    from layerlake.ingest.batching import Batch, Window
    from layerlake.ingest.capture import forward_batch
    from layerlake.ingest.jacobian import make_capture
    from layerlake.ingest.models import load_model

    lm = load_model(smollm, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", device="cpu")
    spec = ll.JacobianSketch(k=5, l=11, positions="last", layers=(2, 20))
    cap = make_capture(spec)
    ids = tuple(lm.tokenizer("The capital of France is")["input_ids"])
    batch = Batch(0, (Window(0, "0" * 32, 0, 0, ids, False),))
    with cap.recording(lm):
        _, hs, tid, mask = forward_batch(lm, batch, [0], "float32", want_nll=False)
    res = cap(lm, batch, hs, tid, mask)[cap.key]["layers"]
    omega, psi = sketch_matrices(lm.d_model, spec.k, spec.l, spec.seed)
    with cap.row_functions(lm, tid, mask, [(0, len(ids) - 1)]) as maps:
        for layer, (f, z0) in maps.items():
            jres = torch.func.jacrev(f)(z0)[0, :, 0, :].detach().double().numpy() - np.eye(lm.d_model)
            scale = np.abs(jres).max() * np.sqrt(lm.d_model)
            assert np.abs(res[layer]["Y"][0] - jres @ omega).max() <= 1e-4 * scale
            assert np.abs(res[layer]["W"][0] - psi.T @ jres).max() <= 1e-4 * scale
