"""One forward pass over a batch: hidden states at chosen layers and per-token nll.

Hidden states are cast to the storage dtype on the model's device, checked for
overflow (a finite value that would become inf) and NaN, stripped of padding,
and copied to (pinned) host memory asynchronously; the writer thread waits on
the copy, the forward pass never does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OverflowToInfError, SpecError
from .batching import Batch
from .models import LoadedModel

FLOAT16_MAX = 65504.0
TORCH_STORAGE = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclasses.dataclass
class BatchOutput:
    batch: Batch
    hidden: dict[int, torch.Tensor]  # layer -> [n_real_tokens, d] on host, storage dtype
    nll: torch.Tensor | None  # [n_real_tokens] float32 on host (NaN at each window's first token)
    ready: Any = None  # a CUDA event to wait on before reading, or None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def wait(self) -> None:
        if self.ready is not None:
            self.ready.synchronize()

    def hidden_numpy(self, layer: int, dtype: str) -> np.ndarray:
        t = self.hidden[layer]
        if dtype == "bfloat16":
            return t.view(torch.int16).numpy().view(np.uint16)
        return t.numpy()


def pad_batch(batch: Batch, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    t = batch.padded_len
    ids = torch.full((len(batch.windows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch.windows), t), dtype=torch.long)
    for i, w in enumerate(batch.windows):
        ids[i, : w.n_tokens] = torch.tensor(w.input_ids, dtype=torch.long)
        mask[i, : w.n_tokens] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def forward_batch(lm: LoadedModel, batch: Batch, layers: Sequence[int], dtype: str,
                  want_nll: bool = True) -> tuple[BatchOutput, tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """Run the model on ``batch``; returns the output plus (hidden_states, ids, mask) for extra captures."""
    ids, mask = pad_batch(batch, lm.tokenizer.pad_token_id, lm.device)
    with torch.inference_mode():
        out = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        hs = out.hidden_states
        if hs is None:
            raise SpecError(f"model {lm.ref} returned no hidden_states; layerlake needs output_hidden_states support")
        sizes = {l: hs[l].shape[-1] for l in layers if l < len(hs)}
        if len(set(sizes.values())) > 1:
            raise SpecError(f"model {lm.ref}: hidden size changes between layers ({sizes}); select layers of one "
                            "size with --layers")
        sel = mask.bool()
        target = TORCH_STORAGE[dtype]
        on_cuda = lm.device.type == "cuda"
        hidden: dict[int, torch.Tensor] = {}
        for l in layers:
            h = hs[l][sel]
            if h.numel():  # one pass, no temporary (abs() would allocate a copy); NaN propagates
                lo, hi = torch.aminmax(h)
                lo_v, hi_v = float(lo), float(hi)
                peak_v = float("nan") if lo_v != lo_v or hi_v != hi_v else max(-lo_v, hi_v)
            else:
                peak_v = 0.0
            if peak_v != peak_v:
                raise SpecError(f"model {lm.ref} produced NaN at layer {l}; check the model weights and dtype")
            if dtype == "float16" and peak_v > FLOAT16_MAX:
                raise OverflowToInfError(
                    f"layer {l} of {lm.ref} has |h| up to {peak_v:.4g}, beyond float16's range (65504); storing it "
                    "as float16 would give inf: use --dtype bfloat16 or float32"
                )
            if peak_v == float("inf"):
                raise OverflowToInfError(f"layer {l} of {lm.ref} contains inf; nothing stored")
            h = h.to(target)
            if on_cuda:
                host = torch.empty(h.shape, dtype=target, pin_memory=True)
                host.copy_(h, non_blocking=True)
                hidden[l] = host
            else:
                hidden[l] = h.contiguous()  # boolean indexing already made a copy
        nll = None
        if want_nll and lm.is_causal and getattr(out, "logits", None) is not None:
            nll = token_nll(out.logits, ids, mask)[sel].float()
            if on_cuda:
                host = torch.empty(nll.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(nll, non_blocking=True)
                nll = host
            else:
                nll = nll.contiguous()
        ready = None
        if on_cuda:
            ready = torch.cuda.Event()
            ready.record()
    return BatchOutput(batch=batch, hidden=hidden, nll=nll, ready=ready), hs, ids, mask


def token_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, rows_per_chunk: int = 8) -> torch.Tensor:
    """nll[b, t] = -log p(ids[b, t] | ids[b, :t]); NaN at t = 0 and on padding.

    Computed in float32, a few sequences at a time to bound memory. The
    logits of each chunk are used as one contiguous ``[rows * t, vocab]``
    block (the last position's target is ignored): a transposed or sliced
    view would make the softmax stride across the vocabulary, several times
    slower than the forward pass's own head.
    """
    b, t, vocab = logits.shape
    target = torch.full((b, t), -100, dtype=torch.long, device=ids.device)
    target[:, :-1] = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    out = torch.full((b, t), float("nan"), dtype=torch.float32, device=logits.device)
    for s in range(0, b, rows_per_chunk):
        block = logits[s:s + rows_per_chunk]
        n = block.shape[0]
        ce = F.cross_entropy(block.reshape(n * t, vocab).float(), target[s:s + n].reshape(n * t),
                             reduction="none", ignore_index=-100).view(n, t)
        out[s:s + n, 1:] = ce[:, :-1]
    out[mask == 0] = float("nan")
    return out
