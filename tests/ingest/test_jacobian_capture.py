"""Jacobian sketch capture (METRICS.md 6.1, 8.1, 8.3): exactness, agreement with jacrev, finite differences."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import layerlake as ll
from layerlake.errors import SpecError
from layerlake.ingest.batching import Batch, Window
from layerlake.ingest.capture import forward_batch
from layerlake.ingest.jacobian import find_blocks, make_capture, window_positions
from layerlake.ingest.models import LoadedModel, load_model
from layerlake.metrics.jacobian import JacobianFactors
from layerlake.store.sketch import sketch_matrices

TEXTS = ["The quick brown fox jumps over the lazy dog near the river bank.", "Hello world, again."]


# -- a hand-made model whose blocks are linear: J = I + A_l exactly -------------------------------------
class _LinearBlock(torch.nn.Module):
    """x_t -> x_t + A x_t + B x_{t-1}: the own-token Jacobian is I + A (rank(A) = r), B must not leak in."""

    def __init__(self, d: int, r: int, g: torch.Generator) -> None:
        super().__init__()
        a = torch.randn(d, r, generator=g, dtype=torch.float64) @ torch.randn(r, d, generator=g, dtype=torch.float64)
        self.A = torch.nn.Parameter(a / d)
        self.B = torch.nn.Parameter(torch.randn(d, d, generator=g, dtype=torch.float64) / d)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        return (x + x @ self.A.T + prev @ self.B.T,)


class _LinearModel(torch.nn.Module):
    def __init__(self, n_layers: int = 3, d: int = 12, r: int = 3, vocab: int = 50) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Parameter(torch.randn(vocab, d, generator=g, dtype=torch.float64))
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(_LinearBlock(d, r, g) for _ in range(n_layers))
        self.config = types.SimpleNamespace(hidden_size=d, intermediate_size=d, num_attention_heads=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False,
                output_hidden_states: bool = False) -> types.SimpleNamespace:
        h = self.embed[input_ids]
        hs = [h]
        for block in self.model.layers:
            h = block(h, attention_mask=attention_mask)[0]
            hs.append(h)
        return types.SimpleNamespace(hidden_states=tuple(hs), logits=None)


def _batch(lengths: list[int], seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(0, tuple(Window(i, f"{i:032x}", 0, 0, tuple(int(x) for x in rng.integers(3, 50, n)), False)
                          for i, n in enumerate(lengths)))


def _fake_lm(model: torch.nn.Module, d: int, n_layers: int) -> LoadedModel:
    tok = types.SimpleNamespace(pad_token_id=0)
    return LoadedModel(model=model, tokenizer=tok, ref="linear-test", is_causal=False, n_layers=n_layers, d_model=d,
                       device=torch.device("cpu"), info={"fingerprint": "x"})


def _run(cap, lm, batch):
    with cap.recording(lm):
        out, hs, ids, mask = forward_batch(lm, batch, [0], "float32", want_nll=False)
    return cap(lm, batch, hs, ids, mask, [0])[cap.key]


def test_linear_block_of_rank_le_k_is_reconstructed_to_machine_precision():
    d, r, k = 12, 3, 4
    model = _LinearModel(d=d, r=r)
    lm = _fake_lm(model, d, 3)
    spec = ll.JacobianSketch(k=k, positions="all")
    cap = make_capture(spec)
    batch = _batch([7, 4])
    res = _run(cap, lm, batch)
    _, psi = sketch_matrices(d, k, spec.l, spec.seed)
    assert sorted(res["layers"]) == [1, 2, 3]
    for layer, arrays in res["layers"].items():
        A = model.model.layers[layer - 1].A.detach().numpy()
        assert arrays["rows"].tolist() == list(range(11))  # every token, batch-local rows in order
        assert arrays["Y"].shape == (11, d, k) and arrays["W"].shape == (11, spec.l, d)
        for y, w in zip(arrays["Y"], arrays["W"]):
            f = JacobianFactors.from_sketch(y, w, psi)
            # sketches are stored as float32, so "machine precision" is float32's here
            assert np.abs(f.dense() - A).max() <= 1e-6 * np.abs(A).max()


def test_linear_block_exact_jacobian_and_pure_math_to_float64_precision():
    d, r = 12, 3
    A = _LinearModel(d=d, r=r).model.layers[0].A.detach().numpy()
    omega, psi = sketch_matrices(d, 4, 9, seed=3)
    f = JacobianFactors.from_sketch(A @ omega, psi.T @ A, psi)
    assert np.abs(f.dense() - A).max() < 1e-12
    model = _LinearModel(d=d, r=r)
    lm = _fake_lm(model, d, 3)
    cap = make_capture(ll.JacobianSketch(k=4, positions="last", exact=True, layers=(2,)))
    res = _run(cap, lm, _batch([5, 3]))
    J = res["layers"][2]["J"]
    A2 = model.model.layers[1].A.detach().numpy()
    assert J.shape == (2, d, d)
    assert np.abs(J - (np.eye(d) + A2)).max() < 1e-6  # float32 storage of float64 products
    assert res["layers"][2]["rows"].tolist() == [4, 7]  # last token of each window


# -- tiny transformers: sketches vs torch.func.jacrev on the captured map; the map vs finite differences --
FAMILIES = ["gpt2", "llama", "bert", "neox"]


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return {kind: load_model(str(tiny_models[kind]), device="cpu") for kind in FAMILIES}


def _text_batch(lm: LoadedModel, texts=TEXTS) -> Batch:
    return Batch(0, tuple(Window(i, f"{i:032x}", 0, 0, tuple(lm.tokenizer(t)["input_ids"]), False)
                          for i, t in enumerate(texts)))


@pytest.mark.parametrize("kind", FAMILIES)
def test_sketch_agrees_with_jacrev_of_the_captured_block(loaded, kind):
    lm = loaded[kind]
    spec = ll.JacobianSketch(k=5, l=9, positions=(1, -1), exact=True)
    cap = make_capture(spec)
    batch = _text_batch(lm)
    res = _run(cap, lm, batch)
    omega, psi = sketch_matrices(lm.d_model, spec.k, spec.l, spec.seed)
    n0 = batch.windows[0].n_tokens
    ends = [w.n_tokens - 1 for w in batch.windows]
    _, _, ids, mask = forward_batch(lm, batch, [0], "float32", want_nll=False)
    eye = np.eye(lm.d_model)
    for t_round in (1, None):  # position 1 of both sequences, then the last of both (the shorter is padded)
        targets = [(b, 1 if t_round == 1 else ends[b]) for b in range(2)]
        with cap.row_functions(lm, ids, mask, targets) as maps:
            for layer, (f, z0) in maps.items():
                jac = torch.func.jacrev(f)(z0).detach().numpy()  # [n, d, n, d]
                assert np.abs(jac[0, :, 1, :]).max() == 0.0  # sequences do not interact
                arrays = res["layers"][layer]
                for b, t in targets:
                    row = t + (n0 if b == 1 else 0)
                    i = arrays["rows"].tolist().index(row)
                    jres = jac[b, :, b, :] - eye
                    scale = np.abs(jres).max()
                    assert np.abs(arrays["Y"][i] - jres @ omega).max() <= 2e-5 * scale * np.sqrt(lm.d_model)
                    assert np.abs(arrays["W"][i] - psi.T @ jres).max() <= 2e-5 * scale * np.sqrt(lm.d_model)
                    assert np.abs(arrays["J"][i] - jac[b, :, b, :]).max() <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("kind", FAMILIES)
def test_captured_map_matches_a_finite_difference_probe_of_the_full_model(loaded, kind):
    """Perturb block l's input at (b, t) inside a full forward pass and read hidden_states[l][b, t]."""
    lm0 = loaded[kind]
    model = lm0.model.double()
    try:
        lm = LoadedModel(**{**lm0.__dict__, "model": model})
        cap = make_capture(ll.JacobianSketch(k=2, positions="last"))
        batch = _text_batch(lm)
        _, _, ids, mask = forward_batch(lm, batch, [0], "float32", want_nll=False)
        blocks = find_blocks(model, lm.n_layers)[1]
        b, t = 1, batch.windows[1].n_tokens - 1
        v = torch.randn(lm.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        with cap.row_functions(lm, ids, mask, [(b, t)]) as maps:
            for layer, (f, z0) in maps.items():
                jv = torch.func.jvp(f, (z0,), (v[None],))[1][0].detach()

                def probe(eps: float) -> torch.Tensor:
                    def pre(module, args, kwargs):
                        x = (args[0] if args else kwargs["hidden_states"]).clone()
                        x[b, t] += eps * v
                        if args:
                            return (x,) + tuple(args[1:]), kwargs
                        return args, {**kwargs, "hidden_states": x}
                    h = blocks[layer - 1].register_forward_pre_hook(pre, with_kwargs=True)
                    try:
                        with torch.no_grad():
                            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                                        use_cache=False)
                    finally:
                        h.remove()
                    return out.hidden_states[layer][b, t]

                # Llama/NeoX norms and rotary tables compute in float32 even in a float64 model, so the
                # probe is only ~1e-4 accurate; a wrong map (other rows free, wrong mask) is off by O(1)
                eps = 1e-3
                fd = (probe(eps) - probe(-eps)) / (2 * eps)
                err = float((fd - jv).abs().max() / jv.abs().max())
                assert err < 2e-3, (layer, err)
    finally:
        lm0.model.float()


# -- positions ----------------------------------------------------------------------------------------
def test_window_positions():
    w = Window(0, "ab" * 16, 0, 0, tuple(range(10)), False)
    assert window_positions(w, "last", 0) == [9]
    assert window_positions(w, "all", 0) == list(range(10))
    s = window_positions(w, 4, 0)
    assert len(s) == 4 and s == sorted(s) and s == window_positions(w, 4, 0)
    assert window_positions(w, 4, 1) != s or window_positions(w, 4, 2) != s  # the seed matters
    assert window_positions(w, 50, 0) == list(range(10))  # clamped to the window
    assert window_positions(w, (0, -1, 3), 0) == [0, 3, 9]
    with pytest.raises(SpecError, match=r"beyond document #0 \(abababababab\).*10 tokens"):
        window_positions(w, (10,), 0)


# -- the one-pass all-tokens form (METRICS.md 8.5) and power iterations -----------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_one_pass_for_all_tokens_equals_one_token_per_pass(loaded, kind):
    lm = loaded[kind]
    batch = _text_batch(lm)
    res = {}
    for method in ("auto", "rounds"):
        cap = make_capture(ll.JacobianSketch(k=3, positions="all", exact=True, layers=(1, 3)), method=method)
        res[method] = _run(cap, lm, batch)["layers"]
        if method == "auto":
            assert cap._one_pass_ok == {}  # every block went through the attention interface
    for layer in (1, 3):
        a, r = res["auto"][layer], res["rounds"][layer]
        assert a["rows"].tolist() == r["rows"].tolist() == list(range(batch.n_tokens))
        for name in ("Y", "W", "J"):
            assert np.abs(a[name] - r[name]).max() <= 1e-5 * np.abs(r[name]).max(), name


def test_blocks_without_attention_fall_back_to_one_token_per_pass():
    model = _LinearModel(d=12, r=3)
    lm = _fake_lm(model, 12, 3)
    cap = make_capture(ll.JacobianSketch(k=4, positions="all", layers=(1,)))
    res = _run(cap, lm, _batch([3, 2]))
    assert cap._one_pass_ok == {1: False}
    assert res["layers"][1]["rows"].tolist() == [0, 1, 2, 3, 4]


def test_power_iterations_store_factors_of_the_jacobian():
    d, r = 12, 3
    model = _LinearModel(d=d, r=r)
    lm = _fake_lm(model, d, 3)
    cap = make_capture(ll.JacobianSketch(k=4, positions="last", power_iterations=2, layers=(1,)))
    res = _run(cap, lm, _batch([5, 3]))
    arrays = res["layers"][1]
    assert set(arrays) == {"Q", "B", "rows"} and res["attrs"]["power_iterations"] == 2
    A = model.model.layers[0].A.detach().numpy()
    for q, b in zip(arrays["Q"], arrays["B"]):
        np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-6)
        assert np.abs(q @ b - A).max() <= 1e-6 * np.abs(A).max()


def test_power_iterations_find_the_top_singular_vectors(loaded):
    """On a real (tiny) block, q = 3 power iterations recover the top-4 subspace far better than one pass."""
    from scipy.linalg import subspace_angles

    from layerlake.queries.jacobians import factors_from_arrays
    lm = loaded["llama"]
    batch = _text_batch(lm)
    angles = {}
    for q in (0, 3):
        spec = ll.JacobianSketch(k=12, positions="last", power_iterations=q, exact=True, layers=(2,))
        cap = make_capture(spec)
        res = _run(cap, lm, batch)
        facs = factors_from_arrays(res["attrs"], res["layers"][2])
        angles[q] = []
        for f, J in zip(facs, res["layers"][2]["J"]):
            u = np.linalg.svd(J - np.eye(lm.d_model))[0][:, :4]
            angles[q].append(np.degrees(subspace_angles(f.top(4)[0], u).max()))
    assert max(angles[3]) < 10 and max(angles[3]) < min(angles[0])


def test_l_is_not_checked_against_d_with_power_iterations(loaded):
    """With power iterations l is unused, so its default 2k+1 may exceed d."""
    lm = loaded["gpt2"]
    cap = make_capture(ll.JacobianSketch(k=lm.d_model, power_iterations=1, layers=(1,)))
    cap.prepare(lm)
    with pytest.raises(SpecError, match="l=129 is larger than the hidden size d=64"):
        make_capture(ll.JacobianSketch(k=lm.d_model, layers=(1,))).prepare(lm)
