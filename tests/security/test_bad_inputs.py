"""Smaller bad inputs: each a one-line error (never "internal error"), the lake readable and unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import layerlake as ll
from layerlake.cli import main

from tests.models import build_tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("gpt2", tmp_path_factory.mktemp("bad-inputs") / "gpt2", n_layers=2, d=32)


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory: pytest.TempPathFactory, small_gpt2: Path) -> Path:
    path = tmp_path_factory.mktemp("bad-inputs-lake") / "lake"
    ll.Lake(path).ingest(str(small_gpt2), ["alpha beta", "gamma delta epsilon"], dataset="base", device="cpu")
    return path


def _snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], lake: Path, match: str) -> None:
    before = _snapshot(lake)
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and "\n" not in err and "internal error" not in err, err
    assert match in err, err
    assert _snapshot(lake) == before
    assert ll.Lake(lake, mode="r").tokens("base").collect().height > 0        # still readable


def test_deeply_nested_metadata_is_refused_before_writing(tmp_path: Path, small_gpt2: Path, base_lake: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    deep: object = 1
    for _ in range(500):
        deep = [deep]
    corpus = tmp_path / "deep.jsonl"
    corpus.write_text(json.dumps({"text": "a document", "meta": deep}) + "\n")
    _refused(["ingest", str(small_gpt2), str(corpus), "--lake", str(base_lake), "--dataset", "deep",
              "--device", "cpu"], capsys, base_lake, "nests lists/objects more than 32 levels")
    assert ll.Lake(base_lake, mode="r").datasets() == ["base"]


def test_int_metadata_beyond_int64_is_refused(tmp_path: Path, small_gpt2: Path, base_lake: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "big.jsonl"
    corpus.write_text('{"text": "a document", "n": %d}\n' % (1 << 70))
    _refused(["ingest", str(small_gpt2), str(corpus), "--lake", str(base_lake), "--dataset", "big",
              "--device", "cpu"], capsys, base_lake, "beyond int64")


@pytest.mark.parametrize("flags, match", [
    (["--batch-tokens", "0"], "--batch-tokens 0 must be a positive"),
    (["--batch-tokens", "-5"], "--batch-tokens -5 must be a positive"),
    (["--layers", "0,,1"], "layers='0,,1'"),
    (["--device", "tpu"], "--device 'tpu' is not a device"),
])
def test_bad_ingest_options(tmp_path: Path, small_gpt2: Path, base_lake: Path, capsys: pytest.CaptureFixture[str],
                            flags: list[str], match: str) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("one document\n")
    _refused(["ingest", str(small_gpt2), str(corpus), "--lake", str(base_lake), "--dataset", "opts",
              *([] if "--device" in flags else ["--device", "cpu"]), *flags], capsys, base_lake, match)


def test_line_separator_inside_jsonl_and_txt(tmp_path: Path, small_gpt2: Path) -> None:
    jsonl, txt = tmp_path / "c.jsonl", tmp_path / "c.txt"
    jsonl.write_text('{"text": "before\u2028after"}\n{"text": "second"}\r\n', encoding="utf-8")
    txt.write_text("one\u2028document\u0085still one\r\ntwo\n", encoding="utf-8")
    lake = ll.Lake(tmp_path / "lake")
    lake.ingest(str(small_gpt2), str(jsonl), dataset="j", device="cpu")
    lake.ingest(str(small_gpt2), str(txt), dataset="t", device="cpu")
    texts = {name: lake.store.dataset_table(name).column("text").to_pylist() for name in ("j", "t")}
    assert texts == {"j": ["before\u2028after", "second"], "t": ["one\u2028document\u0085still one", "two"]}


def test_cli_commands_exit_cleanly_in_a_loop(base_lake: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LAYERLAKE_PROGRESS": "0"}
    runs = [["verify", "--quick"], ["gc", "--dry-run"], ["ls"], ["verify", "--quick"], ["gc"]] * 2
    codes = []
    for args in runs:
        r = subprocess.run([sys.executable, "-m", "layerlake", *args, "--lake", str(base_lake)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        codes.append((args[0], r.returncode, r.stderr[-200:]))
    assert all(rc == 0 for _, rc, _ in codes), codes
    r = subprocess.run([sys.executable, "-m", "layerlake", "--help"], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "usage" in r.stdout
