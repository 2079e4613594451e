"""A tokenizer object keeps per-call truncation state; it must not change the extraction's identity."""

from __future__ import annotations

import layerlake as ll
from layerlake.ingest.models import tokenizer_hash


def test_used_tokenizer_hashes_like_a_fresh_one(tiny_gpt2):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    fresh = tokenizer_hash(tok)
    tok(["some text"] * 2, truncation=True, max_length=4, return_overflowing_tokens=True, stride=1)
    tok(["some text"], padding="max_length", max_length=8)
    assert tokenizer_hash(tok) == fresh


def test_second_ingest_with_the_same_objects_reuses_everything(tmp_path, tiny_gpt2, corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_gpt2), AutoTokenizer.from_pretrained(tiny_gpt2)
    lake = ll.Lake(tmp_path / "lake")
    first = lake.ingest(model, corpus[:5], tokenizer=tok, model_name="tiny", dataset="d", max_length=16)
    second = lake.ingest(model, corpus[:5], tokenizer=tok, model_name="tiny", dataset="d", max_length=16)
    by_path = lake.ingest(str(tiny_gpt2), corpus[:5], dataset="d", max_length=16)
    assert second.extraction_id == first.extraction_id == by_path.extraction_id
    assert second.nothing_computed and by_path.nothing_computed
