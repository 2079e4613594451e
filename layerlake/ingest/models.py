"""Model loading and fingerprinting.

A model is given as a Hugging Face Hub id, a local directory (optionally with
``gguf_file=``) or an already-built ``PreTrainedModel`` plus its tokenizer.
The fingerprint hashes what determines the numbers: weights, tokenizer,
config, dtype and attention implementation; never paths or times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any

import torch

from ..errors import LayerlakeError, ModelLoadError, NotFoundError, SpecError
from ..store import json_hash

log = logging.getLogger(__name__)

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclasses.dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    ref: str
    is_causal: bool
    n_layers: int
    d_model: int
    device: torch.device
    info: dict[str, Any]
    hidden_sizes: list[int] = dataclasses.field(default_factory=list)

    def check_layer_sizes(self, layers: list[int]) -> None:
        sizes = {l: self.hidden_sizes[l] for l in layers if l < len(self.hidden_sizes)}
        if len(set(sizes.values())) > 1:
            raise SpecError(f"model {self.ref}: hidden size changes between layers ({sizes}); layerlake stores "
                            "[rows, d_model] per layer with one d_model: select layers of one size with --layers")
        if sizes:
            self.d_model = next(iter(sizes.values()))

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device={device!r} asked for but no CUDA GPU is available; use --device cpu or auto")
    return dev


def load_model(model: Any, *, tokenizer: Any = None, gguf_file: str | None = None, revision: str | None = None,
               device: str | torch.device | None = "auto", torch_dtype: str | torch.dtype | None = None,
               attn_implementation: str | None = None, model_name: str | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load (or wrap) a model and tokenizer and fingerprint them."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

    dev = resolve_device(device)
    dtype = _torch_dtype(torch_dtype)
    if isinstance(model, PreTrainedModel):
        mdl = model
        ref = model_name or str(getattr(model, "name_or_path", "") or type(model).__name__)
        if tokenizer is None:
            if not getattr(model, "name_or_path", None):
                raise SpecError("a model object needs tokenizer= (it has no name_or_path to load one from)")
            tokenizer = _load_tokenizer(AutoTokenizer, model.name_or_path, gguf_file, revision, trust_remote_code)
        if dtype is not None:
            mdl = mdl.to(dtype)
    elif isinstance(model, (str, os.PathLike)):
        ref = model_name or os.fspath(model)
        src = os.fspath(model)
        looks_like_path = src.startswith((".", "/", "~")) or os.sep in src and not _is_hub_id(src)
        if looks_like_path and not os.path.exists(os.path.expanduser(src)):
            raise NotFoundError(f"model path {src} does not exist; give a local model directory or a Hub id like gpt2")
        if os.path.isfile(src) and src.endswith(".gguf"):
            gguf_file = os.path.basename(src)
            src = os.path.dirname(os.path.abspath(src))
        kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            kw["gguf_file"] = gguf_file
        if revision:
            kw["revision"] = revision
        try:
            config = AutoConfig.from_pretrained(src, **kw)
        except Exception as exc:
            raise config_error(src, gguf_file, exc) from None
        causal = _is_causal_config(config, gguf=bool(gguf_file))
        cls = AutoModelForCausalLM if causal else AutoModel
        mkw = dict(kw)
        if dtype is not None:
            mkw["dtype"] = dtype
        if attn_implementation:
            mkw["attn_implementation"] = attn_implementation
        try:
            mdl = cls.from_pretrained(src, **mkw)
        except Exception as exc:
            raise ModelLoadError(f"cannot load model weights from {src!r}: {type(exc).__name__}: {exc}") from None
        if tokenizer is None:
            tokenizer = _load_tokenizer(AutoTokenizer, src, gguf_file, revision, trust_remote_code)
    else:
        raise SpecError(f"model must be a Hub id, a local path or a transformers PreTrainedModel, not {type(model).__name__}")

    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _load_tokenizer(AutoTokenizer, os.fspath(tokenizer), None, None, trust_remote_code)
    _prepare_tokenizer(tokenizer)
    mdl.eval()
    cfg = mdl.config.get_text_config() if hasattr(mdl.config, "get_text_config") else mdl.config
    n_layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0))
    d_model = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
    is_causal = type(mdl).__name__.endswith(CAUSAL_SUFFIXES) and hasattr(mdl, "get_output_embeddings") \
        and mdl.get_output_embeddings() is not None
    info = fingerprint_info(mdl, tokenizer, ref)
    mdl.to(dev)
    sizes = probe_hidden_sizes(mdl, tokenizer, dev, ref)
    if sizes:
        n_layers = len(sizes) - 1
        d_model = sizes[0]
    return LoadedModel(model=mdl, tokenizer=tokenizer, ref=ref, is_causal=is_causal, n_layers=n_layers,
                       d_model=d_model, device=dev, info=info, hidden_sizes=sizes)


def config_error(src: str, gguf_file: str | None, exc: Exception) -> LayerlakeError:
    """What a failed config load means: NotFoundError only when the model is not there.

    A local folder without its config (or GGUF) file, or a Hub id that cannot be
    found (offline, no such repository), is not found; a config that is there but
    unreadable (corrupt JSON, no ``model_type``, a damaged GGUF) is a ModelLoadError.
    """
    what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    wanted = gguf_file or "config.json"
    unreadable = isinstance(exc.__context__, (ValueError, UnicodeDecodeError)) or not isinstance(exc, OSError)
    if os.path.isdir(os.path.expanduser(src)):
        if not os.path.exists(os.path.join(os.path.expanduser(src), wanted)):
            return NotFoundError(f"model folder {src} has no {wanted}; give a folder written by save_pretrained "
                                 "(or a .gguf file)")
        return ModelLoadError(f"cannot read {wanted} of model {src}: {what}; the file is damaged or not a "
                              "transformers config: download or save the model again")
    if unreadable:
        return ModelLoadError(f"cannot read the config of model {src!r}: {what}")
    return NotFoundError(f"cannot load model {src!r}: {what} (give a local model directory, or a Hub id with "
                         "network access)")


def probe_hidden_sizes(model: Any, tokenizer: Any, device: torch.device, ref: str) -> list[int]:
    """Run one short input to learn how many hidden states the model returns and their sizes."""
    ids = tokenizer("layerlake probe", return_tensors="pt")["input_ids"].to(device)
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    except Exception as exc:
        raise ModelLoadError(f"model {ref} failed on a test input: {type(exc).__name__}: {exc}") from None
    hs = getattr(out, "hidden_states", None)
    if not hs:
        raise SpecError(f"model {ref} returns no hidden_states; layerlake needs output_hidden_states support")
    return [int(h.shape[-1]) for h in hs]


def _is_causal_config(config: Any, *, gguf: bool) -> bool:
    """Causal LM (load with its LM head, store nll) or encoder (load the base model)?"""
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        return any(a.endswith(CAUSAL_SUFFIXES) for a in archs)
    if gguf or getattr(config, "is_decoder", False):
        return True
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    mt = getattr(config, "model_type", "")
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _is_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not os.path.exists(s)


def _load_tokenizer(auto_tok: Any, src: str, gguf_file: str | None, revision: str | None, trust: bool) -> Any:
    kw: dict[str, Any] = {"trust_remote_code": trust}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    if revision:
        kw["revision"] = revision
    try:
        return auto_tok.from_pretrained(src, **kw)
    except Exception as exc:
        raise ModelLoadError(f"cannot load a tokenizer for {src!r}: {type(exc).__name__}: {exc}; pass tokenizer=") from None


def _prepare_tokenizer(tok: Any) -> None:
    if not getattr(tok, "is_fast", False):
        raise SpecError(f"tokenizer {type(tok).__name__} is not a fast tokenizer; layerlake needs a fast "
                        "(Rust) tokenizer for windowing and offsets")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token or tok.convert_ids_to_tokens(0)
    tok.padding_side = "right"


def _torch_dtype(value: Any) -> torch.dtype | None:
    if value in (None, "auto"):
        return None
    if isinstance(value, torch.dtype):
        return value
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[str(value)]
    except KeyError:
        raise SpecError(f"model dtype {value!r} must be float32, float16 or bfloat16") from None


def weights_hash(model: Any) -> str:
    """blake2b over every named parameter and buffer (name, dtype, shape, bytes), sorted by name."""
    h = hashlib.blake2b(digest_size=16)
    state = model.state_dict()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tokenizer_hash(tok: Any) -> str:
    parts: dict[str, Any] = {"class": type(tok).__name__, "padding_side": tok.padding_side,
                             "special": {k: str(v) for k, v in sorted(tok.special_tokens_map.items())}}
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        # truncation and padding are per-call state that a fast tokenizer leaves on its backend after each
        # call: hashing them made the same tokenizer a different extraction once it had been used
        # (a fresh tokenizer hashes as before: the copy is reset to no truncation and no padding)
        text = backend.to_str()
        if backend.truncation is not None or backend.padding is not None:
            from tokenizers import Tokenizer
            clean = Tokenizer.from_str(text)
            clean.no_truncation()
            clean.no_padding()
            text = clean.to_str()
        parts["backend"] = hashlib.sha256(text.encode()).hexdigest()
    else:
        parts["vocab"] = hashlib.sha256(repr(sorted(tok.get_vocab().items())).encode()).hexdigest()
    return json_hash(parts, 32)


def fingerprint_info(model: Any, tok: Any, ref: str) -> dict[str, Any]:
    cfg = model.config
    cfg_dict = {k: v for k, v in cfg.to_diff_dict().items()
                if not k.startswith("_") and k not in ("name_or_path", "transformers_version", "torch_dtype", "dtype")}
    info = {
        "model_class": type(model).__name__,
        "config_hash": json_hash(_jsonable(cfg_dict), 32),
        "weights_hash": weights_hash(model),
        "tokenizer_hash": tokenizer_hash(tok),
        "model_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": str(getattr(cfg, "_attn_implementation", None)),
        "padding_side": tok.padding_side,
    }
    info["fingerprint"] = json_hash(info, 32)
    info["revision"] = getattr(cfg, "_commit_hash", None)
    info["model"] = ref
    info["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    return info


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else str(obj)
    return str(obj)
