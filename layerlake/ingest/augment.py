"""Seeded character-level text augmentations for augmentation-invariance metrics (METRICS.md 2.8).

Paper 1 builds the views for InfoNCE, LiDAR and DiME with nlpaug
``Sequential([SplitAug(), RandomCharAug(), KeyboardAug()])`` at library defaults.
This module reproduces that pipeline with the standard library only, driven by
``random.Random`` so that a view is a pure function of ``(text, seed, view index)``:

1. split: ``ceil(0.3 * tokens)`` words (clamped to [1, 10]) of at least 4 characters
   are split in two at a random inner position;
2. random-char substitute: as many words of >= 4 characters get
   ``ceil(0.3 * len)`` (clamped to [1, 10]) characters replaced by a random letter,
   digit or one of ``!@#$%^&*()_+``;
3. keyboard: the same word/character counts, each chosen character replaced by a
   QWERTY neighbour (both cases, shifted symbols included).

Tokenisation follows nlpaug's default: split on non-word characters (kept as tokens,
whitespace dropped), re-join with single spaces and re-attach punctuation. So
whitespace and line breaks are normalised, as in the official pipeline.
The official code also stringified nlpaug's returned list, so the model saw
``"['...']"``; ``faithful_wrap=True`` reproduces that.
"""

from __future__ import annotations

import math
import random
import re
import string

from ..errors import SpecError

__all__ = ["QWERTY_NEIGHBOURS", "augment_text", "augment_views"]

AUG_P = 0.3  # nlpaug aug_p / aug_word_p / aug_char_p defaults
AUG_MIN, AUG_MAX = 1, 10  # nlpaug aug_*_min / aug_*_max defaults
MIN_CHAR = 4  # words shorter than this are never augmented
RANDOM_CHARS = string.ascii_uppercase + string.ascii_lowercase + string.digits + "!@#$%^&*()_+"

_ROWS = ("1234567890-=", "qwertyuiop[]", "asdfghjkl;'", "zxcvbnm,./")
_SHIFT = dict(zip("1234567890-=[];',./", '!@#$%^&*()_+{}:"<>?'))


def _build_neighbours() -> dict[str, tuple[str, ...]]:
    """Keys adjacent on a staggered QWERTY layout (left, right, two above, two below).

    Lower/upper case and shifted symbols of a key share its neighbours, and every
    neighbour comes in all its variants (nlpaug ``include_upper_case`` and
    ``include_special_char`` defaults); a key's own variants are not neighbours.
    """
    pos = {ch: (r, c) for r, row in enumerate(_ROWS) for c, ch in enumerate(row)}
    base: dict[str, set[str]] = {}
    for ch, (r, c) in pos.items():
        near = [(r, c - 1), (r, c + 1), (r - 1, c), (r - 1, c + 1), (r + 1, c - 1), (r + 1, c)]
        base[ch] = {_ROWS[rr][cc] for rr, cc in near if 0 <= rr < len(_ROWS) and 0 <= cc < len(_ROWS[rr])}

    def variants(ch: str) -> set[str]:
        return {ch, ch.upper(), _SHIFT.get(ch, ch)}

    out: dict[str, tuple[str, ...]] = {}
    for ch, near in base.items():
        values = set().union(*(variants(n) for n in near))
        for key in variants(ch):
            out[key] = tuple(sorted(values))
    return out


QWERTY_NEIGHBOURS: dict[str, tuple[str, ...]] = _build_neighbours()

_TOKEN_SPLIT = re.compile(r"(\W)")
_DETOKENIZE = (
    (re.compile(r"\s([.,:;?!%]+)([ '\"`])"), r"\1\2"),  # punctuation before a space or quote
    (re.compile(r"\s([.,:;?!%]+)$"), r"\1"),  # punctuation at the end
    (re.compile(r"\s([\[({<])\s"), r" \1"),  # opening bracket
    (re.compile(r"\s([\])}>])(\s|$)"), r"\1\2"),  # closing bracket (nlpaug misses it at the end)
)


def _tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN_SPLIT.split(text) if t.strip()]


def _detokenize(tokens: list[str]) -> str:
    text = " ".join(tokens)
    for pattern, repl in _DETOKENIZE:
        text = pattern.sub(repl, text)
    return text.strip()


def _count(size: int) -> int:
    return min(max(math.ceil(AUG_P * size), AUG_MIN), AUG_MAX)


def _pick_words(tokens: list[str], rng: random.Random) -> list[int]:
    eligible = [i for i, t in enumerate(tokens) if len(t) >= MIN_CHAR]
    if not tokens or not eligible:
        return []
    return rng.sample(eligible, min(_count(len(tokens)), len(eligible)))


def _split(tokens: list[str], rng: random.Random) -> list[str]:
    out = list(tokens)
    for i in sorted(_pick_words(tokens, rng), reverse=True):
        word = out[i]
        cut = rng.randint(1, len(word) - 2)
        out[i : i + 1] = [word[:cut], word[cut:]]
    return out


def _substitute(tokens: list[str], rng: random.Random, keyboard: bool) -> list[str]:
    out = list(tokens)
    for i in sorted(_pick_words(tokens, rng)):
        chars = list(out[i])
        eligible = [j for j, ch in enumerate(chars) if not keyboard or ch in QWERTY_NEIGHBOURS]
        if not eligible:
            continue
        for j in rng.sample(eligible, min(_count(len(chars)), len(eligible))):
            pool = QWERTY_NEIGHBOURS[chars[j]] if keyboard else RANDOM_CHARS
            chars[j] = rng.choice(pool)
        out[i] = "".join(chars)
    return out


def _augment_once(text: str, rng: random.Random) -> str:
    tokens = _tokenize(text)
    if not tokens:
        return text
    tokens = _split(tokens, rng)
    tokens = _substitute(tokens, rng, keyboard=False)
    tokens = _substitute(tokens, rng, keyboard=True)
    out = _detokenize(tokens)
    return out if out.strip() else text


def _view_rng(seed: int, view: int) -> random.Random:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"augment: seed must be an int, got {seed!r} ({type(seed).__name__})")
    return random.Random(f"layerlake.augment:{seed}:{view}")


def augment_text(text: str, seed: int, *, faithful_wrap: bool = False) -> str:
    """One seeded augmentation of ``text`` (split -> random-char substitute -> keyboard).

    Deterministic given ``(text, seed)``; equals ``augment_views(text, 1, seed)[0]``.
    Never empty for non-empty input (text with no word characters comes back
    unchanged). ``faithful_wrap=True`` returns ``str([augmented])``, i.e. ``"['...']"``,
    as the official paper-1 code fed to the model.
    """
    out = _augment_once(text, _view_rng(seed, 0))
    return str([out]) if faithful_wrap else out


def augment_views(text: str, n_views: int, seed: int, *, faithful_wrap: bool = False) -> list[str]:
    """``n_views`` independent augmentations of the ORIGINAL ``text`` (2 for InfoNCE/DiME, 16 for LiDAR).

    View ``i`` depends only on ``(text, seed, i)``, so asking for more views keeps the
    first ones unchanged.
    """
    if n_views < 1:
        raise SpecError(f"augment_views: n_views must be >= 1, got {n_views}")
    views = [_augment_once(text, _view_rng(seed, i)) for i in range(n_views)]
    return [str([v]) for v in views] if faithful_wrap else views
