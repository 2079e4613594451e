"""Seeded text augmentations (METRICS.md 2.8)."""

from __future__ import annotations

import ast
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerlake.errors import SpecError
from layerlake.ingest import augment
from layerlake.ingest.augment import QWERTY_NEIGHBOURS, augment_text, augment_views

TEXT = (
    "The quick brown fox jumps over the lazy dog. Representation learning in transformers, "
    "layer by layer, compresses prompts (sometimes)!"
)


def test_deterministic_given_seed():
    assert augment_text(TEXT, 3) == augment_text(TEXT, 3)
    assert augment_views(TEXT, 4, 3) == augment_views(TEXT, 4, 3)
    assert augment_text(TEXT, 3) != augment_text(TEXT, 4)


def test_views_are_independent_augmentations_of_the_original():
    views = augment_views(TEXT, 16, 0)
    assert len(views) == 16
    assert len(set(views)) == 16  # independent draws differ
    assert all(v != TEXT for v in views)
    assert views[0] == augment_text(TEXT, 0)
    assert augment_views(TEXT, 2, 0) == views[:2]  # more views keep the first ones


def test_augmentation_is_character_level_and_bounded():
    out = augment_text(TEXT, 1)
    # split adds spaces; substitutions keep the number of non-space characters
    assert len(out.replace(" ", "")) == len(TEXT.replace(" ", ""))
    changed = sum(a != b for a, b in zip(out.replace(" ", ""), TEXT.replace(" ", "")))
    n_tokens = len(augment._tokenize(TEXT))
    word_budget = min(max(-(-3 * n_tokens // 10), 1), 10)
    assert 1 <= changed <= 2 * word_budget * 10


def test_short_words_are_never_touched():
    text = "a an the cat is on my mat"  # no word of >= 4 characters
    assert augment_text(text, 0) == text


def test_split_cuts_inside_the_word():
    tokens = augment._split(["abcdefgh"], augment.random.Random(0))
    assert "".join(tokens) == "abcdefgh" and len(tokens) == 2 and all(len(t) >= 1 for t in tokens)


def test_keyboard_substitution_uses_qwerty_neighbours():
    rng = augment.random.Random(5)
    word = "keyboard"
    out = augment._substitute([word], rng, keyboard=True)[0]
    assert len(out) == len(word) and out != word
    for a, b in zip(word, out):
        assert a == b or b in QWERTY_NEIGHBOURS[a]


def test_qwerty_map_is_symmetric_and_local():
    assert set(QWERTY_NEIGHBOURS["s"]) >= {"a", "d", "w", "e", "z", "x"}
    assert "p" not in QWERTY_NEIGHBOURS["a"] and "s" not in QWERTY_NEIGHBOURS["s"]
    for key in string.ascii_lowercase:
        for other in QWERTY_NEIGHBOURS[key]:
            if other in string.ascii_lowercase:
                assert key in QWERTY_NEIGHBOURS[other]
    assert QWERTY_NEIGHBOURS["Q"] == QWERTY_NEIGHBOURS["q"]


def test_random_char_substitution_draws_from_nlpaug_candidates():
    out = augment._substitute(["abcdefghijklmnopqrstuvwxyz"], augment.random.Random(2), keyboard=False)[0]
    assert all(c in augment.RANDOM_CHARS for c in out)


def test_faithful_wrap_reproduces_stringified_list():
    plain = augment_text(TEXT, 9)
    wrapped = augment_text(TEXT, 9, faithful_wrap=True)
    assert wrapped == str([plain]) and wrapped.startswith("[") and ast.literal_eval(wrapped) == [plain]
    assert augment_views(TEXT, 2, 9, faithful_wrap=True) == [str([v]) for v in augment_views(TEXT, 2, 9)]
    assert not augment_text(TEXT, 9).startswith("['")


def test_whitespace_and_punctuation_only_inputs_survive():
    assert augment_text("   ", 0) == "   "
    assert augment_text("?!", 0) == "?!"
    assert augment_text("hello\n\nworld", 0).strip()


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=80), st.integers(0, 2**31))
def test_never_empty_for_non_empty_input(text, seed):
    out = augment_text(text, seed)
    assert out
    assert augment_text(text, seed) == out


def test_bad_arguments():
    with pytest.raises(SpecError, match="n_views"):
        augment_views(TEXT, 0, 1)
    with pytest.raises(SpecError, match="seed"):
        augment_text(TEXT, "1")  # type: ignore[arg-type]


def test_detokenizer_reattaches_punctuation():
    assert augment._detokenize(augment._tokenize("Hello, world. (yes)")) == "Hello, world. (yes)"
    assert re.search(r"\s[,.]", augment_text("Words, words, words. More words here.", 0)) is None
