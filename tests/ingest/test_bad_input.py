"""Every bad input gets a clear error naming it, and the lake stays as it was."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import BertConfig, BertModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

import layerlake as ll
from layerlake.ingest.models import load_model
from layerlake.store import seal_json


def _snapshot(path):
    return sorted((p.relative_to(path), p.stat().st_size) for p in path.rglob("*") if p.is_file())


@pytest.fixture
def used_lake(tmp_path, tiny_gpt2, corpus):
    lake = ll.Lake(tmp_path / "lake")
    lake.ingest(str(tiny_gpt2), corpus[:3], dataset="base")
    return lake


def _assert_unchanged(lake, before):
    assert _snapshot(lake.store.fs.root and __import__("pathlib").Path(lake.store.fs.root)) == before


@pytest.mark.parametrize("make_data, match", [
    (lambda t: t / "missing.jsonl", "does not exist"),
    (lambda t: (t / "bad.txt").write_bytes(b"fine line\nbad \xff\xfe line\n") and t / "bad.txt", "line 2"),
    (lambda t: (t / "empty.txt").write_text("\n\n  \n") and t / "empty.txt", "empty"),
    (lambda t: (t / "c.jsonl").write_text('{"body": "x"}\n') and t / "c.jsonl", "no text column 'text'"),
    (lambda t: (t / "c.jsonl").write_text('{"text": "x"}\nnot json\n') and t / "c.jsonl", "line 2"),
    (lambda t: (t / "c.xlsx").write_text("x") and t / "c.xlsx", "unsupported file type"),
    (lambda t: [], "empty"),
    (lambda t: ["ok", 3], "list item 1"),
])
def test_bad_corpus(tmp_path, tiny_gpt2, used_lake, make_data, match):
    before = _snapshot(tmp_path / "lake")
    data = make_data(tmp_path)
    with pytest.raises(ll.LayerlakeError, match=match) as err:
        used_lake.ingest(str(tiny_gpt2), data, dataset="new")
    if isinstance(data, type(tmp_path)):
        assert data.name in str(err.value)
    assert _snapshot(tmp_path / "lake") == before


def test_unknown_model(tmp_path, used_lake, corpus):
    before = _snapshot(tmp_path / "lake")
    with pytest.raises(ll.NotFoundError, match="does not exist"):
        used_lake.ingest(str(tmp_path / "no-model-here"), corpus[:2], dataset="x")
    with pytest.raises(ll.NotFoundError, match="cannot load model"):
        used_lake.ingest("surely-not/a-real-model-id-xyz", corpus[:2], dataset="x")
    assert _snapshot(tmp_path / "lake") == before


def test_layers_out_of_range(tmp_path, tiny_gpt2, used_lake, corpus):
    before = _snapshot(tmp_path / "lake")
    with pytest.raises(ll.SpecError, match=r"out of range.*0\.\.3"):
        used_lake.ingest(str(tiny_gpt2), corpus[:2], dataset="x", layers="0,9")
    assert _snapshot(tmp_path / "lake") == before


class _Shrinking(PreTrainedModel):
    """A toy model whose hidden size changes between layers."""

    config_class = BertConfig

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config)
        self.proj = torch.nn.Linear(config.hidden_size, config.hidden_size // 2)

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=True, **kw):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hs = out.hidden_states + (self.proj(out.hidden_states[-1]),)
        return BaseModelOutput(last_hidden_state=hs[-1], hidden_states=hs)


def test_model_whose_hidden_size_changes(tmp_path, tiny_bert, corpus):
    from transformers import AutoTokenizer
    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                     vocab_size=600)
    model = _Shrinking(cfg)
    lake = ll.Lake(tmp_path / "lake")
    with pytest.raises(ll.SpecError, match="hidden size changes"):
        lake.ingest(model, corpus[:2], tokenizer=AutoTokenizer.from_pretrained(tiny_bert), dataset="x",
                    layers=[0, 1, 2, 3], model_name="shrinking")
    assert lake.datasets() == []


def test_lake_of_newer_version_and_file_path(tmp_path, tiny_gpt2, corpus):
    lake = ll.Lake(tmp_path / "lake")
    meta = json.loads((tmp_path / "lake" / "lake.json").read_text())
    meta["format_version"] = "2.0"
    (tmp_path / "lake" / "lake.json").write_text(json.dumps(seal_json(meta)))  # a consistent newer lake.json
    with pytest.raises(ll.FormatVersionError, match="upgrade"):
        ll.Lake(tmp_path / "lake").ingest(str(tiny_gpt2), corpus[:1])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ll.SpecError, match="is a file"):
        ll.Lake(tmp_path / "file")
    del lake


def test_write_error_mid_shard_leaves_lake_as_it_was(tmp_path, tiny_gpt2, used_lake, corpus, monkeypatch):
    before = _snapshot(tmp_path / "lake")
    import layerlake.store.shards as shards_mod
    real = shards_mod.write_array

    def full_disk(group, name, *a, **k):
        if name == "layer_2":
            raise OSError(28, "No space left on device")
        return real(group, name, *a, **k)

    monkeypatch.setattr(shards_mod, "write_array", full_disk)
    with pytest.raises(OSError, match="No space left"):
        used_lake.ingest(str(tiny_gpt2), corpus[3:8], dataset="new")
    assert _snapshot(tmp_path / "lake") == before
    assert used_lake.verify() == []
    assert "new" not in used_lake.datasets()


def test_read_only_lake_refuses_ingest(tmp_path, tiny_gpt2, used_lake, corpus):
    ro = ll.Lake(tmp_path / "lake", mode="r")
    with pytest.raises(ll.ReadOnlyError, match="read-only"):
        ro.ingest(str(tiny_gpt2), corpus[:2], dataset="x")
    assert ro.tokens("base").collect().height > 0


def test_unknown_dataset_and_layer_in_reads(used_lake):
    with pytest.raises(ll.NotFoundError, match="known datasets: base"):
        used_lake.tokens("nope")
    with pytest.raises(ll.NotFoundError, match=r"stored layers: \[0, 1, 2, 3\]"):
        used_lake.read_vectors("base", layers=[7])


@pytest.mark.parametrize("damage, error, match", [
    ("corrupt", ll.ModelLoadError, "cannot read config.json"),
    ("no-model-type", ll.ModelLoadError, "cannot read config.json"),
    ("missing", ll.NotFoundError, "has no config.json"),
    ("bad-gguf", ll.ModelLoadError, "cannot read model.gguf"),
])
def test_config_failures_say_what_went_wrong(tmp_path, tiny_gpt2, damage, error, match):
    """Only a model that is not there is a NotFoundError; a damaged one is a ModelLoadError naming the file."""
    model = tmp_path / "model"
    shutil.copytree(tiny_gpt2, model)
    if damage == "corrupt":
        (model / "config.json").write_text('{"model_type": "gpt2", "n_embd": ')
    elif damage == "no-model-type":
        (model / "config.json").write_text('{"hidden_size": 8}')
    elif damage == "missing":
        (model / "config.json").unlink()
    else:
        (model / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00 definitely not a gguf file")
        model = model / "model.gguf"
    with pytest.raises(error, match=match) as err:
        load_model(str(model), device="cpu")
    assert not isinstance(err.value, ll.NotFoundError) or damage == "missing"
    assert "\n" not in str(err.value)
