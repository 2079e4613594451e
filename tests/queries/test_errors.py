"""Bad input names the thing and lists the valid choices."""

from __future__ import annotations

import pytest

import layerlake as ll


@pytest.mark.parametrize("call", ["vectors", "read_vectors", "tokens", "docs"])
def test_unknown_dataset_lists_datasets(plake, call):
    with pytest.raises(ll.NotFoundError, match=r"'nope'.*known datasets: .*'?a'?, '?b'?"):
        getattr(plake, call)("nope", model="tiny-gpt2")


@pytest.mark.parametrize("call", ["vectors", "read_vectors", "tokens"])
def test_unknown_model_lists_models(plake, call):
    with pytest.raises(ll.NotFoundError, match=r"model 'gpt-5'.*valid models: .*tiny-gpt2.*tiny-llama"):
        getattr(plake, call)("a", model="gpt-5")


def test_model_is_required_when_ambiguous(plake):
    with pytest.raises(ll.SpecError, match="pass model= one of"):
        plake.vectors("a")


@pytest.mark.parametrize("call", ["vectors", "read_vectors"])
def test_unknown_layer_lists_stored_layers(plake, call):
    with pytest.raises(ll.NotFoundError, match=r"layer\(s\) \[7\].*stored layers: \[0, 1, 2\]"):
        getattr(plake, call)("a", model="tiny-llama", layers=[7])


def test_documents_not_in_the_dataset(plake):
    with pytest.raises(ll.NotFoundError, match="not in dataset 'a'"):
        plake.vectors("a", model="tiny-gpt2", docs=["0" * 32])


def test_model_accepts_alias_and_extraction_id(plake):
    eid = plake.extraction_id("a", "tiny-llama")
    a = plake.vectors("a", model=eid, layers=[1]).select("doc_hash", "position").collect()
    b = plake.vectors("a", model="tiny-llama", layers=[1]).select("doc_hash", "position").collect()
    assert a.equals(b) and a.height > 0
