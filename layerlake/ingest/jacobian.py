"""Capture of Jacobian sketches of transformer blocks (METRICS.md 6.1, 8.1-8.3, 8.5).

For block ``l`` (1..L; ``hidden_states[l-1] -> hidden_states[l]``) and token
``t`` of a window, ``J`` is the Jacobian of the block's output at ``t`` with
respect to that token's own input, every other token's input held fixed,
attention included (the official paper-5 Jacobian). ``Jres = J - I``. Stored per
(layer, token): the one-pass sketch ``Y = Jres Omega`` (k JVPs) and
``W = Psi^T Jres`` (l VJPs) with the key's shared Gaussian test matrices
(:mod:`layerlake.store.sketch`); or, with ``power_iterations=q``, ``Q =
orth((Jres Jres^T)^q Jres Omega)`` and ``B = Q^T Jres``; and the full ``J`` when
``exact=True``. ``J`` is never formed otherwise.

How: during the forward pass, forward hooks record every block's real call
(positional and keyword arguments: masks, rotary ``position_embeddings``,
position ids... and its output). Afterwards the block is re-run on the recorded
arguments, under ``torch.func`` (``jvp``/``vjp`` + ``vmap``), in one of two forms:

- all tokens at once (default where possible, METRICS.md 8.5): transformers'
  attention function is temporarily replaced by one whose value is the same but
  in which query ``t`` sees only its own key and value as variables (the other
  positions' keys/values are constants). The block's Jacobian is then
  block-diagonal over tokens with blocks ``J_tt``, so one JVP/VJP with a vector
  at every target token gives all their products. Used when the block's attention
  goes through ``ALL_ATTENTION_FUNCTIONS`` with ``sdpa`` or ``eager`` (checked by
  counting calls), else:
- one target per sequence per pass: ``f(Z) = block(X with X[b, t_b] = Z_b)[b, t_b]``
  (sequences do not interact, so ``f``'s Jacobian is block-diagonal over the
  batch); ``positions="all"`` then needs one pass per position.

Scaled-dot-product attention runs with the math kernel during the re-run (the fused
kernels lack forward-mode AD); where forward mode is unavailable anyway, ``J v``
is taken as the VJP of the (linear) VJP map. The re-run must reproduce the
forward pass's ``hidden_states[l]`` at the targets, or the ingest stops.

Block L: where the model's ``hidden_states[L]`` is the final norm of block L's
output (GPT-2, Llama, GPT-NeoX), the map includes that norm, so ``J`` is always
``d hidden_states[l] / d hidden_states[l-1]``; its attrs list it in
``final_norm_layers`` (METRICS.md 6.1 recommends leaving it out of coupling).
Products run in the model's dtype and are stored as float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.func import jvp, vjp, vmap

from ..errors import SpecError
from ..store import JacobianSketch, sketch_attrs, sketch_key, sketch_matrices
from .batching import Batch, Window
from .models import LoadedModel
from .own_token_attention import OnePassUnsupported, math_attention, own_token_attention

log = logging.getLogger(__name__)

# where transformers keeps the list of blocks, by family (first match wins)
BLOCK_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen, Gemma, SmolLM2, OLMo ...
    "transformer.h",  # GPT-2, GPT-J, Bloom, Falcon
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "encoder.layer",  # BertModel, RobertaModel (MiniLM)
    "bert.encoder.layer", "roberta.encoder.layer",
    "layers", "h", "transformer.layers", "model.language_model.layers",
)
FINAL_NORM_PATHS = (
    "model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm",
    "norm", "ln_f", "final_layer_norm", "model.language_model.norm",
)
CPU_WORK_BYTES = 2 << 30  # memory budget for one vmapped chunk of tangents on CPU


def make_capture(spec: JacobianSketch, method: str = "auto") -> "JacobianCapture":
    """The per-batch capture ``capture(lm, batch, hidden_states, ids, mask, layers) -> dict``.

    method: ``"auto"`` sketches every target token of a block in one pass where the
    block's attention goes through transformers' attention interface (METRICS.md 8.5),
    else one target per sequence per pass; ``"rounds"`` always does the latter.
    """
    if not isinstance(spec, JacobianSketch):
        raise SpecError(f"jacobian={spec!r} must be a layerlake.JacobianSketch")
    return JacobianCapture(spec, method)


# -- finding the blocks ------------------------------------------------------------------------
def find_blocks(model: torch.nn.Module, n_layers: int) -> tuple[str, torch.nn.ModuleList]:
    """The model's ``nn.ModuleList`` of its ``n_layers`` transformer blocks (and its dotted path)."""
    for path in BLOCK_PATHS:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layers:
            return path, mod
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers and n_layers > 0]
    if len(found) == 1:
        return found[0]
    raise SpecError(
        f"cannot capture the blocks of {type(model).__name__} for Jacobian sketches: looked for a list of "
        f"{n_layers} blocks at {', '.join(BLOCK_PATHS)} and found "
        + (f"{len(found)} candidate lists ({', '.join(n for n, _ in found)})" if found else "none")
        + "; ingest this model without a jacobian sketch (drop --jacobian-k), or use a model whose blocks live at "
          "one of those paths"
    )


def _final_norm_candidates(model: torch.nn.Module, block_path: str) -> list[tuple[str, torch.nn.Module]]:
    out: list[tuple[str, torch.nn.Module]] = []
    parent = block_path.rsplit(".", 1)[0] if "." in block_path else ""
    names = list(FINAL_NORM_PATHS)
    if parent:
        names += [f"{parent}.{n}" for n in ("norm", "ln_f", "final_layer_norm", "final_norm")]
    seen: set[int] = set()
    for name in names:
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        if id(mod) not in seen:
            seen.add(id(mod))
            out.append((name, mod))
    return out


# -- recording block calls ----------------------------------------------------------------------
class BlockRecorder:
    """Forward hooks that keep each block's real call: ``calls[i] = (args, kwargs, output)``."""

    def __init__(self, blocks: Sequence[torch.nn.Module], wanted: set[int]) -> None:
        self.blocks = blocks
        self.wanted = wanted  # 0-based block indices
        self.calls: dict[int, list[Any]] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator["BlockRecorder"]:
        handles = []
        try:
            for i in sorted(self.wanted):
                block = self.blocks[i]
                handles.append(block.register_forward_pre_hook(self._pre(i), with_kwargs=True))
                handles.append(block.register_forward_hook(self._post(i), with_kwargs=True))
            yield self
        finally:
            for h in handles:
                h.remove()

    def _pre(self, i: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.calls[i] = [args, dict(kwargs), None]
        return hook

    def _post(self, i: int) -> Any:
        def hook(module: Any, args: Any, kwargs: Any, output: Any) -> None:
            self.calls[i][2] = output
        return hook


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if hasattr(output, "hidden_states") and isinstance(output.hidden_states, torch.Tensor):
        return output.hidden_states
    raise SpecError(f"a block returned {type(output).__name__}, not a hidden-state tensor; cannot sketch its Jacobian")


def _clone(obj: Any, memo: dict[int, Any]) -> Any:
    """Normal (non-inference) copies of the tensors in a recorded call; shared objects stay shared."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, torch.Tensor):
        out: Any = obj.detach().clone()
    elif isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        out = tuple(_clone(o, memo) for o in obj)
    elif isinstance(obj, list):
        out = [_clone(o, memo) for o in obj]
    elif isinstance(obj, dict):
        out = {k: _clone(v, memo) for k, v in obj.items()}
    else:
        out = obj
    memo[key] = out
    return out


# -- positions --------------------------------------------------------------------------------
def window_positions(window: Window, positions: Any, seed: int) -> list[int]:
    """Sorted positions (within the window) whose Jacobians are sketched.

    ``"last"``: the last token; ``"all"``; N: the N positions with the smallest
    ``blake2b(doc_hash, window, seed, position)`` (all of them when the window has
    at most N tokens: clamped, not an error); a tuple: explicit positions, negative
    from the end; one beyond the window is a :class:`SpecError` naming the document.
    """
    n = window.n_tokens
    if positions == "last":
        return [n - 1]
    if positions == "all":
        return list(range(n))
    if isinstance(positions, int):
        if positions >= n:
            return list(range(n))
        prefix = f"{window.doc_hash}:{window.window}:{seed}:".encode()
        ranks = [hashlib.blake2b(prefix + str(p).encode(), digest_size=8).digest() for p in range(n)]
        return sorted(sorted(range(n), key=ranks.__getitem__)[:positions])
    out = set()
    for p in positions:
        q = p + n if p < 0 else p
        if not 0 <= q < n:
            raise SpecError(
                f"jacobian position {p} is beyond document #{window.doc_order} ({window.doc_hash[:12]}"
                + (f", window {window.window}" if window.window else "")
                + f"), which has {n} tokens (valid: 0..{n - 1} or -{n}..-1); choose positions every document has, "
                  "e.g. positions='last' or a sampled count"
            )
        out.add(q)
    return sorted(out)


# -- the capture -------------------------------------------------------------------------------
class JacobianCapture:
    """Callable per batch; see the module docstring. One instance per ingest (per sketch spec)."""

    def __init__(self, spec: JacobianSketch, method: str = "auto") -> None:
        if method not in ("auto", "rounds"):
            raise SpecError(f"method={method!r} must be 'auto' (one pass for all tokens where possible) or 'rounds'")
        self.spec = spec
        self.method = method
        self._one_pass_ok: dict[int, bool] = {}
        self.key = sketch_key(spec)
        self._lm: Any = None
        self._record: BlockRecorder | None = None
        self._post: dict[int, Any] = {}  # 0-based last block -> final norm module (or None)
        self._forward_ad = True

    # set-up and checks (before any compute) ------------------------------------------------
    def prepare(self, lm: LoadedModel) -> None:
        """Find the blocks, resolve layers, check k and l against d, build the test matrices."""
        if self._lm is lm:
            return
        spec = self.spec
        path, blocks = find_blocks(lm.model, lm.n_layers)
        d = lm.d_model
        for name, v in (("k", spec.k),) + ((("l", spec.l),) if not spec.power_iterations else ()):
            if v > d:
                raise SpecError(f"JacobianSketch {name}={v} is larger than the hidden size d={d} of {lm.ref}; "
                                f"use {name} <= {d} (k=2K+1 for top-K coupling, l=2k+1; METRICS.md 8.3)")
        layers = spec.layers.within(lm.n_layers, f"the Jacobian sketch of {lm.ref}")
        self.block_path, self.blocks, self.layers, self.d = path, blocks, layers, d
        omega, psi = sketch_matrices(d, spec.k, spec.l, spec.seed)
        self._omega64, self._psi64 = omega, psi
        self._mats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._base_attrs = sketch_attrs(spec, d, {"block_path": path, "layers_requested": layers})
        self._lm = lm
        self._post = {}

    def check_windows(self, windows: Sequence[Window]) -> None:
        """Raise before any compute if an explicit position is beyond a window."""
        for w in windows:
            window_positions(w, self.spec.positions, self.spec.seed)

    @contextlib.contextmanager
    def recording(self, lm: LoadedModel) -> Iterator[None]:
        """Wrap the forward pass of a batch: records the block calls the next ``__call__`` uses."""
        self.prepare(lm)
        rec = BlockRecorder(self.blocks, {x - 1 for x in self.layers})
        self._record = None
        with rec.active():
            yield
        self._record = rec

    # per batch --------------------------------------------------------------------------------
    def batch_bytes(self, batch: Batch) -> int:
        """Bytes of the arrays :meth:`__call__` returns for ``batch``, known before any compute (after
        :meth:`prepare`): float32 ``Y, W`` (or ``Q, B``), ``J`` with ``exact``, and int64 ``rows``."""
        spec, d = self.spec, self.d
        rows = spec.k if spec.power_iterations else spec.l
        per_token = 4 * (d * spec.k + rows * d + (d * d if spec.exact else 0)) + 8
        return len(self.targets(batch)) * len(self.layers) * per_token

    def targets(self, batch: Batch) -> list[tuple[int, int, int]]:
        """``(sequence b, position t, batch-local row)`` of every sketched token, by row."""
        out = []
        offset = 0
        for b, w in enumerate(batch.windows):
            out.extend((b, t, offset + t) for t in window_positions(w, self.spec.positions, self.spec.seed))
            offset += w.n_tokens
        return out

    def __call__(self, lm: LoadedModel, batch: Batch, hidden_states: Sequence[torch.Tensor], ids: torch.Tensor,
                 mask: torch.Tensor, layers: Sequence[int] = ()) -> dict[str, Any]:
        """Sketches of this batch: ``{key: {"attrs", "layers": {l: {"Y", "W", "rows"[, "J"]}}}}``.

        ``layers`` (the hidden layers being stored) is not used: the sketched blocks
        come from the spec.
        """
        self.prepare(lm)
        targets = self.targets(batch)
        rec, self._record = self._record, None
        if rec is None or len(rec.calls) < len(self.layers):
            rec = self._record_forward(lm, ids, mask)
        rounds: dict[int, list[tuple[int, int, int]]] = {}
        seen: dict[int, int] = {}
        for b, t, row in targets:
            r = seen.get(b, 0)
            seen[b] = r + 1
            rounds.setdefault(r, []).append((b, t, row))
        round_rows = np.asarray([row for r in sorted(rounds) for _, _, row in rounds[r]], dtype=np.int64)
        order = np.argsort(round_rows, kind="stable")
        layers_out: dict[int, dict[str, np.ndarray]] = {}
        with torch.inference_mode(False), torch.no_grad(), math_attention():
            memo: dict[int, Any] = {}
            for layer in self.layers:
                args, kwargs, output = rec.calls[layer - 1]
                post = self._final_map(layer, output, hidden_states)
                args, kwargs = _clone(args, memo), _clone(kwargs, memo)
                expected = hidden_states[layer] if layer < len(hidden_states) else None
                merged = None
                if self.method == "auto" and self._one_pass_ok.get(layer, True):
                    merged = self._sketch_all_tokens(lm, layer, args, kwargs, post, targets, expected, mask)
                    if merged is None:
                        self._one_pass_ok[layer] = False
                        log.info("block %d of %s: attention does not route through the transformers attention "
                                 "interface; sketching one token per sequence per pass", layer, lm.ref)
                if merged is None:
                    parts = [self._sketch_round(lm, layer, args, kwargs, post, rnd, expected)
                             for _, rnd in sorted(rounds.items())]
                    merged = {name: np.concatenate([p[name] for p in parts])[order] for name in parts[0]}
                    merged["rows"] = round_rows[order]
                layers_out[layer] = merged
        attrs = dict(self._base_attrs, final_norm_layers=sorted(x + 1 for x, m in self._post.items() if m is not None))
        return {self.key: {"attrs": attrs, "layers": layers_out}}

    @contextlib.contextmanager
    def row_functions(self, lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor,
                      targets: Sequence[tuple[int, int]]) -> Iterator[dict[int, tuple[Any, torch.Tensor]]]:
        """For validation: ``{block: (f, z0)}`` of the captured row maps for ``targets`` ``[(b, t)]``.

        One target per sequence; ``torch.func.jacrev(f)(z0)`` is then the exact
        ``[n, d, n, d]`` Jacobian (block-diagonal). Use inside the context (math
        attention kernel, grad mode, not inference mode).
        """
        self.prepare(lm)
        rec = self._record_forward(lm, ids, mask)
        with torch.inference_mode():
            hs = lm.model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True).hidden_states
        out = {}
        with torch.inference_mode(False), math_attention():
            memo: dict[int, Any] = {}
            for layer in self.layers:
                args, kwargs, output = rec.calls[layer - 1]
                post = self._final_map(layer, output, hs)
                f, z0, _, _ = self.row_map(lm, layer, _clone(args, memo), _clone(kwargs, memo), post,
                                           [(b, t, None) for b, t in targets])
                out[layer] = (f, z0)
            yield out

    def _record_forward(self, lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> BlockRecorder:
        """Used when the caller did not wrap its forward pass in :meth:`recording`: one extra forward."""
        rec = BlockRecorder(self.blocks, {x - 1 for x in self.layers})
        with rec.active(), torch.inference_mode():
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return rec

    def _final_map(self, layer: int, output: Any, hidden_states: Sequence[torch.Tensor]) -> Any:
        """None, or the final norm when ``hidden_states[layer]`` is the norm of the block's output."""
        i = layer - 1
        if i in self._post:
            return self._post[i]
        out = _first_tensor(output)
        target = hidden_states[layer] if layer < len(hidden_states) else None
        if target is None or _close(out, target):
            self._post[i] = None
            return None
        for name, norm in _final_norm_candidates(self._lm.model, self.block_path):
            with torch.inference_mode():
                try:
                    ok = _close(norm(out), target)
                except (TypeError, RuntimeError, ValueError):  # not a norm taking one tensor of this shape
                    ok = False
            if ok:
                log.info("block %d of %s: hidden_states[%d] is %s(block output); the sketch includes it",
                         layer, self._lm.ref, layer, name)
                self._post[i] = norm
                return norm
        raise SpecError(
            f"block {layer} of {self._lm.ref} ({type(self._lm.model).__name__}): its output is neither "
            f"hidden_states[{layer}] nor a known final norm of it, so its Jacobian cannot be captured; "
            f"leave this block out with jacobian layers=... (e.g. 1..{layer - 1})"
        )

    def _matrices(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        if key not in self._mats:
            self._mats[key] = (torch.as_tensor(self._omega64, dtype=dtype, device=device),
                               torch.as_tensor(self._psi64, dtype=dtype, device=device))
        return self._mats[key]

    def _block_call(self, lm: LoadedModel, layer: int, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """The recorded hidden-state input ``X`` of a block and ``call(x)`` = the block on ``x``, rest as recorded."""
        block = self.blocks[layer - 1]
        if args and isinstance(args[0], torch.Tensor):
            X = args[0]

            def call(x: torch.Tensor) -> Any:
                return block(x, *args[1:], **kwargs)
        elif isinstance(kwargs.get("hidden_states"), torch.Tensor):
            X = kwargs["hidden_states"]

            def call(x: torch.Tensor) -> Any:
                return block(*args, **{**kwargs, "hidden_states": x})
        else:
            raise SpecError(f"block {layer} of {lm.ref} was not called with a hidden-state tensor first (or as "
                            "hidden_states=); its Jacobian cannot be captured; leave it out with jacobian layers=...")
        if X.dim() != 3 or X.shape[-1] != self.d:
            raise SpecError(f"block {layer} of {lm.ref}: input has shape {tuple(X.shape)}, expected [batch, tokens, "
                            f"{self.d}]; its Jacobian cannot be captured")
        return X, call

    def _sketch_all_tokens(self, lm: LoadedModel, layer: int, args: tuple[Any, ...], kwargs: dict[str, Any],
                           post: Any, targets: list[tuple[int, int, int]], expected: torch.Tensor | None,
                           mask: torch.Tensor) -> dict[str, np.ndarray] | None:
        """Every target of the batch in one pass (METRICS.md 8.5); None where that is not possible.

        Inside attention, the other positions' keys and values are constants, so the
        block becomes a map whose Jacobian is block-diagonal over tokens with diagonal
        blocks ``J_tt``: one JVP with a tangent at every target token gives ``J_tt v_t``
        for all of them at once, one VJP likewise ``u_t^T J_tt``.
        """
        X, call = self._block_call(lm, layer, args, kwargs)
        calls = [0]

        def F(x: torch.Tensor) -> torch.Tensor:
            out = _first_tensor(call(x))
            return post(out) if post is not None else out

        bi = torch.tensor([b for b, _, _ in targets], device=X.device)
        ti = torch.tensor([t for _, t, _ in targets], device=X.device)
        chunk = self._chunk(tuple(X.shape), X, lm)
        try:
            with own_token_attention(lm.model, calls):
                primal, vjp_fn = vjp(F, X)
                if calls[0] == 0:
                    return None
                self._check_primal(lm, layer, primal[bi, ti], expected, bi, ti)

                def scatter(V: torch.Tensor) -> torch.Tensor:  # [m, n, d] -> [m, B, T, d], zero off the targets
                    U = torch.zeros((V.shape[0],) + tuple(X.shape), dtype=X.dtype, device=X.device)
                    U[:, bi, ti] = V.to(X.dtype)
                    return U

                def jmul(V: torch.Tensor) -> torch.Tensor:
                    return self._jvp(F, X, vjp_fn, primal, scatter(V), chunk)[:, bi, ti].float() - V

                def jtmul(U: torch.Tensor) -> torch.Tensor:
                    return vmap(lambda u: vjp_fn(u)[0], chunk_size=chunk)(scatter(U))[:, bi, ti].float() - U

                out = self._sketch_ops(jmul, jtmul, len(targets), X.device)
        except OnePassUnsupported as exc:
            log.info("block %d: one-pass sketch unavailable (%s)", layer, exc)
            return None
        out["rows"] = np.asarray([row for _, _, row in targets], dtype=np.int64)
        return out

    def _sketch_ops(self, jmul: Any, jtmul: Any, n: int, device: torch.device) -> dict[str, np.ndarray]:
        """The stored arrays from ``jmul(V) = Jres v`` and ``jtmul(U) = Jres^T u`` (float32 ``[m, n, d]``, per target).

        One-pass sketch (``power_iterations=0``): ``Y = Jres Omega``, ``W = Psi^T Jres``.
        With q power iterations (METRICS.md 8.2): ``Q = orth((Jres Jres^T)^q Jres Omega)``,
        re-orthonormalised between products, and ``B = Q^T Jres``: ``Jres ~ Q B``.
        """
        spec, d = self.spec, self.d
        omega, psi = (m.float() for m in self._matrices(device, torch.float32))

        def bcast(M: torch.Tensor) -> torch.Tensor:  # [d, m] -> [m, n, d]: the same vectors for every target
            return M.T[:, None, :].expand(-1, n, -1)

        def orth(V: torch.Tensor) -> torch.Tensor:  # [m, n, d] -> orthonormal [m, n, d] per target
            q, _ = torch.linalg.qr(V.permute(1, 2, 0))
            return q.permute(2, 0, 1)

        out: dict[str, torch.Tensor] = {}
        if spec.power_iterations == 0:
            out["Y"] = jmul(bcast(omega)).permute(1, 2, 0)  # [n, d, k]
            out["W"] = jtmul(bcast(psi)).permute(1, 0, 2)  # [n, l, d]
        else:
            Y = jmul(bcast(omega))
            for _ in range(spec.power_iterations):
                Y = jmul(orth(jtmul(orth(Y))))
            Q = orth(Y)  # [k, n, d]
            out["Q"] = Q.permute(1, 2, 0)  # [n, d, k]
            out["B"] = jtmul(Q).permute(1, 0, 2)  # [n, k, d]: rows q_j^T Jres
        if spec.exact:
            rows = []
            step = 64
            for i in range(0, d, step):
                m = min(step, d - i)
                E = torch.zeros(m, n, d, device=device)
                E[torch.arange(m), :, torch.arange(i, i + m)] = 1.0
                rows.append(jtmul(E) + E)  # e_j^T J = row j of J
            out["J"] = torch.cat(rows).permute(1, 0, 2)  # [n, d(out), d(in)]
        return {name: t.contiguous().cpu().numpy().astype(np.float32, copy=False) for name, t in out.items()}

    def row_map(self, lm: LoadedModel, layer: int, args: tuple[Any, ...], kwargs: dict[str, Any], post: Any,
                rnd: Sequence[tuple[int, int, Any]]) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``f(Z) = post(block(X with X[b, t_b] = Z_b))[b, t_b]`` for one target per sequence, and ``Z0``.

        Returns ``(f, z0, bi, ti)``; ``f`` maps ``[n, d] -> [n, d]`` and its Jacobian
        is block-diagonal over the n targets (different sequences).
        """
        X, call = self._block_call(lm, layer, args, kwargs)
        bi = torch.tensor([r[0] for r in rnd], device=X.device)
        ti = torch.tensor([r[1] for r in rnd], device=X.device)
        if len(set(bi.tolist())) != len(bi):
            raise SpecError("row_map: at most one target per sequence")

        def f(z: torch.Tensor) -> torch.Tensor:
            out = _first_tensor(call(X.index_put((bi, ti), z)))
            if post is not None:
                out = post(out)
            return out[bi, ti]

        f.input_shape = tuple(X.shape)  # type: ignore[attr-defined]
        return f, X[bi, ti], bi, ti

    def _sketch_round(self, lm: LoadedModel, layer: int, args: tuple[Any, ...], kwargs: dict[str, Any], post: Any,
                      rnd: list[tuple[int, int, int]], expected: torch.Tensor | None) -> dict[str, np.ndarray]:
        """One target per sequence: products through :meth:`row_map`."""
        f, z0, bi, ti = self.row_map(lm, layer, args, kwargs, post, rnd)
        chunk = self._chunk(f.input_shape, z0, lm)
        primal, vjp_fn = vjp(f, z0)
        self._check_primal(lm, layer, primal, expected, bi, ti)

        def jmul(V: torch.Tensor) -> torch.Tensor:
            return self._jvp(f, z0, vjp_fn, primal, V.to(z0.dtype), chunk).float() - V

        def jtmul(U: torch.Tensor) -> torch.Tensor:
            return vmap(lambda u: vjp_fn(u)[0], chunk_size=chunk)(U.to(z0.dtype)).float() - U

        return self._sketch_ops(jmul, jtmul, len(rnd), z0.device)

    def _jvp(self, f: Any, z0: torch.Tensor, vjp_fn: Any, primal: torch.Tensor, tangents: torch.Tensor,
             chunk: int) -> torch.Tensor:
        if self._forward_ad:
            try:
                return vmap(lambda v: jvp(f, (z0,), (v,))[1], chunk_size=chunk)(tangents)
            except (NotImplementedError, RuntimeError) as exc:
                if "forward" not in str(exc).lower():
                    raise
                log.info("forward-mode AD unavailable (%s); computing J v as the VJP of the VJP", exc)
                self._forward_ad = False
        # J v = d/du <vjp_fn(u), v>: the VJP of the linear map u -> J^T u
        _, vjp_of_vjp = vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(primal))
        return vmap(lambda v: vjp_of_vjp(v)[0], chunk_size=chunk)(tangents)

    def _check_primal(self, lm: LoadedModel, layer: int, primal: torch.Tensor, expected: torch.Tensor | None,
                      bi: torch.Tensor, ti: torch.Tensor) -> None:
        """The re-run block must reproduce the forward pass's hidden_states[layer] at the target rows."""
        if expected is None:
            return
        ref = expected[bi, ti]
        if not _close(primal.detach(), ref):
            err = float((primal.detach().float() - ref.float()).abs().max())
            raise SpecError(
                f"re-running block {layer} of {lm.ref} ({type(lm.model).__name__}) with its recorded call arguments "
                f"does not reproduce hidden_states[{layer}] (max abs difference {err:.3g}); this model family's block "
                "call cannot be captured for Jacobian sketches; leave the block out with jacobian layers=... or "
                "ingest without a jacobian sketch"
            )

    def _chunk(self, shape: tuple[int, ...], X: torch.Tensor, lm: LoadedModel) -> int:
        """Tangents per vmapped chunk so one chunk's activations (batch ``shape``) fit a memory budget."""
        b, t, d = shape
        cfg = getattr(lm.model, "config", None)
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        inter = int(getattr(cfg, "intermediate_size", 0) or getattr(cfg, "n_inner", 0) or 4 * d)
        heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0) or 1)
        per = b * t * (12 * d + 3 * inter + 3 * heads * t) * X.element_size()
        budget = CPU_WORK_BYTES
        if X.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(X.device)
            budget = max(free // 4, 1 << 28)
        return int(max(1, min(1024, budget // max(per, 1))))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a32, b32 = a.detach().float(), b.detach().float()
    tol = 1e-3 if a.dtype in (torch.float32, torch.float64) else 3e-2
    scale = float(b32.abs().max()) if b32.numel() else 0.0
    return bool((a32 - b32).abs().max() <= tol * max(scale, 1.0)) if a32.numel() else True
