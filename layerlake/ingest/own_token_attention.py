"""An attention function for sketching every token's own Jacobian in one pass (METRICS.md 8.5).

:func:`own_token_attention` temporarily replaces the model's attention implementation
(``sdpa`` or ``eager``) in transformers' global ``ALL_ATTENTION_FUNCTIONS`` with
:func:`_own_token_attention_fn`: the same values, but query ``t`` sees only its own key
and value as variables; every other position's key and value is a constant. A block
then has a Jacobian that is block-diagonal over tokens, with the own-token Jacobians
``J_tt`` (other tokens' inputs held fixed, attention included) on the diagonal.
Not thread-safe: the replacement is process-wide while the context is open.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

import torch


class OnePassUnsupported(Exception):
    """The block's attention cannot be rewritten for the one-pass sketch; fall back to rounds."""


_UNSUPPORTED_ATTENTION_KWARGS = ("s_aux", "sinks", "alibi", "position_bias")


@contextlib.contextmanager
def own_token_attention(model: Any, calls: list[int]) -> Iterator[None]:
    """Temporarily route transformers' attention through :func:`_own_token_attention_fn`.

    Replaces the model's attention implementation (``sdpa`` or ``eager``) in the
    global ``ALL_ATTENTION_FUNCTIONS`` for the duration (restored in ``finally``);
    ``calls[0]`` counts the calls, so a block whose attention bypasses the
    interface (no call) is detected and sketched per token instead.
    """
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        raise OnePassUnsupported("transformers has no attention interface") from None
    cfgs = [getattr(model, "config", None)]
    if hasattr(cfgs[0], "get_text_config"):
        cfgs.append(cfgs[0].get_text_config())
    names = sorted({getattr(c, "_attn_implementation", None) or "eager" for c in cfgs if c is not None})
    if any(n not in ("sdpa", "eager") for n in names):
        raise OnePassUnsupported(f"attention implementation {names}")
    local = getattr(ALL_ATTENTION_FUNCTIONS, "_local_mapping", None)
    if local is None:
        raise OnePassUnsupported("unknown AttentionInterface layout")
    saved = {n: local[n] for n in names if n in local}
    try:
        for n in names:
            local[n] = functools.partial(_own_token_attention_fn, calls=calls, implementation=n)
        yield
    finally:
        for n in names:
            if n in saved:
                local[n] = saved[n]
            else:
                local.pop(n, None)


def _own_token_attention_fn(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                            is_causal: bool | None = None, *, calls: list[int], implementation: str,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention whose primal equals sdpa/eager, but query t sees only its own key/value as variables.

    ``query`` ``[B, H, T, dh]``, ``key``/``value`` ``[B, Hkv, T, dh]``; scores
    ``q_t . k_s`` use detached ``k_s`` except on the diagonal (where ``k_t``'s path
    is added with zero primal), the output mixes
    detached ``v_s`` plus ``p_tt (v_t - v_t.detach())``. Returns ``[B, T, H, dh]``.
    """
    calls[0] += 1
    bad = [k for k in _UNSUPPORTED_ATTENTION_KWARGS if kwargs.get(k) is not None]
    if bad or dropout or query.shape[2] != key.shape[2] or kwargs.get("softcap"):
        raise OnePassUnsupported(f"attention arguments {bad or 'dropout/softcap/cache'}")
    if key.shape[1] != query.shape[1]:
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    kd, vd = key.detach(), value.detach()
    scores = (query @ kd.transpose(-1, -2)) * scale
    own_k = (query.detach() * key).sum(-1) * scale  # the key path of the own score (q's path is in `scores`)
    scores = scores + torch.diag_embed(own_k - own_k.detach())
    t = query.shape[2]
    if attention_mask is not None:
        m = attention_mask[..., :t, :t] if attention_mask.dim() == 4 else attention_mask
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
        else:
            scores = scores + m.to(scores.dtype)
    elif implementation == "sdpa" and t > 1 and (is_causal if is_causal is not None
                                                  else getattr(module, "is_causal", True)):
        causal = torch.ones(t, t, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(causal, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    out = probs @ vd + probs.diagonal(dim1=-2, dim2=-1)[..., None] * (value - vd)
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """SDPA with the math kernel (composite ops: forward- and reverse-mode AD everywhere)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield
