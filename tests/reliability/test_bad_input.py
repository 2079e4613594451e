"""Bad input fuzzing: random bytes and odd Unicode as corpora, odd column types, absurd CLI arguments.

Every case ends in a clear error (a LayerlakeError, or from the CLI exit code
1/2 with a one-line message and no traceback) or in a correct result, and
never leaves a damaged lake behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import layerlake as ll
from layerlake.cli import main
from layerlake.errors import LayerlakeError
from layerlake.store.hashing import doc_hash
from tests.reliability.conftest import is_orphan

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def model(tiny_gpt2):
    """The tiny model and tokenizer loaded once (ingest accepts a PreTrainedModel + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(tiny_gpt2), AutoTokenizer.from_pretrained(tiny_gpt2),
            str(tiny_gpt2))


def check_outcome(lake_dir: Path, run: Any, expected_texts: list[str] | None = None) -> str:
    """Run ``run(lake)``; it must succeed correctly or raise LayerlakeError; the lake must verify."""
    lake = ll.Lake(lake_dir)
    try:
        res = run(lake)
    except LayerlakeError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), f"error message is not one line: {exc!r}"
        outcome = "error"
    else:
        outcome = "ok"
        if expected_texts is not None:
            want = list(dict.fromkeys(t for t in expected_texts if t.strip()))
            got = lake.store.dataset_table(res.dataset).column("text").to_pylist()
            assert got == want
            assert lake.store.dataset_table(res.dataset).column("doc_hash").to_pylist() == [doc_hash(t) for t in want]
            toks = lake.tokens(res.dataset).collect()
            vec = lake.read_vectors(res.dataset, layers=[0])
            assert toks.height == vec.shape[1] == res.computed_tokens + 0 * res.reused_docs
            assert np.isfinite(vec).all()
    problems = [p for p in lake.verify() if not is_orphan(p)]
    assert not problems and not [p for p in lake.verify()], f"lake damaged after a {outcome}: {problems}"
    return outcome


texts_strategy = st.lists(st.text(st.characters(codec=None, categories=None), max_size=60), max_size=6)


@FUZZ
@given(texts=texts_strategy)
def test_odd_unicode_lists(model, texts, fault_tally):
    """Any Python strings: lone surrogates, NULs, RTL marks, emoji, combining marks, whitespace only."""
    mdl, tok, name = model
    with tempfile.TemporaryDirectory() as d:
        outcome = check_outcome(Path(d) / "lake", lambda lake: lake.ingest(
            mdl, texts, tokenizer=tok, model_name=name, dataset="u", max_length=32),
            expected_texts=None if any(_has_surrogate(t) for t in texts) else texts)
    fault_tally.record("bad input: corpora", detected=int(outcome == "error"))


def _has_surrogate(t: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in t)


@FUZZ
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".txt", ".jsonl", ".csv", ".tsv", ".parquet", ".md"]))
def test_random_bytes_files(model, raw, suffix, fault_tally):
    mdl, tok, name = model
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"corpus{suffix}"
        path.write_bytes(raw)
        outcome = check_outcome(Path(d) / "lake", lambda lake: lake.ingest(
            mdl, path, tokenizer=tok, model_name=name, max_length=32))
    fault_tally.record("bad input: corpora", detected=int(outcome == "error"))


odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.binary(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                  st.integers(), max_size=2),
)


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({"text": st.one_of(st.text(min_size=1, max_size=30), odd_values),
                                            "meta": odd_values}), min_size=1, max_size=5),
       as_jsonl=st.booleans())
def test_odd_column_types(model, rows, as_jsonl, fault_tally):
    mdl, tok, name = model
    with tempfile.TemporaryDirectory() as d:
        if as_jsonl:
            path = Path(d) / "rows.jsonl"
            try:
                path.write_text("\n".join(json.dumps(r, default=repr) for r in rows))
            except ValueError:  # nan/inf are JSON-able by Python's json; nothing else fails here
                return
            data: Any = path
        else:
            data = rows
        outcome = check_outcome(Path(d) / "lake", lambda lake: lake.ingest(
            mdl, data, tokenizer=tok, model_name=name, max_length=32))
    fault_tally.record("bad input: column types", detected=int(outcome == "error"))


# -- the command line -----------------------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


def assert_clean_cli_error(code: int, err: str, argv: list[str]) -> None:
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code:
        lines = [x for x in err.strip().splitlines() if x.strip()]
        # our errors are one line; argparse prints its usage line(s) first, then one "error:" line
        assert lines and lines[-1].split(": ", 1)[-1], (argv, err)
        assert sum(1 for x in lines if "error" in x.lower()) >= 1, (argv, err)


ABSURD = {
    "--layers": ["-1", "999", "abc", "", ",", "0,,", "1e3", "all,0"],
    "--max-length": ["0", "-5", "abc", "99999999999999999999", "1.5"],
    "--batch-tokens": ["0", "-1", "x"],
    "--shard-mb": ["0", "-1", "nan", "1e300"],
    "--stride": ["-3", "100000"],
    "--dtype": ["float64", "int8", ""],
    "--overflow": ["explode"],
    "--device": ["tpu", "cuda:99", "meta", ""],
    "--dataset": ["", "../escape", "a/b", "x" * 300, ".hidden", "nul\x00"],
    "--text-column": ["", "nope"],
    "--jacobian-k": ["0", "-2", "x"],
    "--num-workers": ["0", "-1", "two"],
    "--gpus-per-worker": ["-1", "nan", "inf", "1e9"],
    "--executor": ["dask", ""],
    "--model-dtype": ["float8", "int4"],
}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(picks=st.lists(st.sampled_from(sorted(ABSURD)), min_size=1, max_size=3, unique=True), data=st.data())
def test_absurd_ingest_arguments(tiny_gpt2, small_corpus_file, picks, data, fault_tally):
    with tempfile.TemporaryDirectory() as d:
        argv = ["--no-progress", "ingest", str(tiny_gpt2), str(small_corpus_file), "--lake", f"{d}/lake"]
        for flag in picks:
            argv += [flag, data.draw(st.sampled_from(ABSURD[flag]), label=flag)]
        if ("--num-workers" in picks or "--gpus-per-worker" in picks) and data.draw(st.booleans(), label="ray"):
            argv += ["--executor", "ray"]  # only ever with an absurd Ray option: refused before Ray starts
        code, err = run_cli(argv)
        assert_clean_cli_error(code, err, argv)
        if Path(d, "lake", "lake.json").exists():
            assert [p for p in ll.Lake(f"{d}/lake", mode="r").verify()] == []
    fault_tally.record("bad input: CLI arguments", detected=int(code != 0))


@pytest.mark.parametrize("argv", [
    [], ["nonsense"], ["ingest"], ["ingest", "m"], ["ls"], ["verify"], ["--bogus", "ls", "--lake", "x"],
    ["ls", "--lake", "/nonexistent/lake"], ["verify", "--lake", "/dev/null"], ["ls", "--lake", ""],
    ["ingest", "/no/such/model", "/no/such/corpus.txt", "--lake", "{tmp}/l"],
    ["ingest", "{model}", "/no/such/corpus.txt", "--lake", "{tmp}/l"],
    ["ingest", "{model}", "{tmp}", "--lake", "{tmp}/l"],
    ["ingest", "{model}", "{corpus}", "--lake", "/dev/null/lake"],
    ["ingest", "{model}", "{corpus}", "--lake", "memory://x", "--executor", "ray"],
    ["ingest", "{corpus}", "{corpus}", "--lake", "{tmp}/l"],
    ["ingest", "{model}", "{corpus}", "--lake", "{tmp}/l", "--gguf-file", "missing.gguf"],
])
def test_absurd_commands(argv, tmp_path, tiny_gpt2, small_corpus_file, fault_tally):
    argv = [a.format(tmp=tmp_path, model=tiny_gpt2, corpus=small_corpus_file) for a in argv]
    code, err = run_cli(argv)
    assert code != 0
    assert_clean_cli_error(code, err, argv)
    fault_tally.record("bad input: CLI arguments", detected=1)


def test_lake_path_that_is_a_file_or_foreign_folder(tmp_path, tiny_gpt2, fault_tally):
    f = tmp_path / "file"
    f.write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.csv").write_text("a,b")
    for lake in (f, tmp_path / "foreign"):
        code, err = run_cli(["ingest", str(tiny_gpt2), str(f), "--lake", str(lake)])
        assert code == 2 and "lake" in err
        assert_clean_cli_error(code, err, [])
    assert f.read_text() == "x" and sorted(p.name for p in (tmp_path / "foreign").iterdir()) == ["data.csv"]
    fault_tally.record("bad input: CLI arguments", trials=2, detected=2)


def test_nan_and_inf_are_not_texts(model, tmp_path):
    mdl, tok, name = model
    for bad in ([math.nan], [1.5], [b"bytes"], [["nested"]]):
        with pytest.raises(LayerlakeError):
            ll.Lake(tmp_path / "l").ingest(mdl, bad, tokenizer=tok, model_name=name)
