"""The command line: --help everywhere, one-line errors with exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerlake.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("cmd", _commands())
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([cmd, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and len(out) > 100


def test_ingest_ls_verify_round_trip(tmp_path, tiny_gpt2, corpus, capsys):
    data = tmp_path / "c.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "i": i}) for i, t in enumerate(corpus[:5])))
    lake = str(tmp_path / "lake")
    assert main(["ingest", str(tiny_gpt2), str(data), "--lake", lake, "--layers", "0,2"]) == 0
    out = capsys.readouterr().out
    assert "ingested 5 documents" in out and "dataset 'c'" in out
    assert main(["ingest", str(tiny_gpt2), str(data), "--lake", lake, "--layers", "0,2"]) == 0
    assert "nothing to compute" in capsys.readouterr().out
    assert main(["ls", "--lake", lake, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["extractions"][0]["layers"] == [0, 2] and info["datasets"][0]["documents"] == 5
    assert main(["verify", "--lake", lake]) == 0
    chunk = next(p for p in (tmp_path / "lake").rglob("layer_2/c/*/*") if p.is_file())
    raw = bytearray(chunk.read_bytes())
    raw[-6] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    assert main(["verify", "--lake", lake]) == 1
    err = capsys.readouterr().err
    assert "layer_2" in err and "problem" in err


@pytest.mark.parametrize("argv, code, needle", [
    (["ingest", "MODEL", "/no/such/file.jsonl", "--lake", "{lake}"], 2, "does not exist"),
    (["ingest", "{model}", "{data}", "--lake", "{lake}", "--layers", "0,99"], 2, "out of range"),
    (["ingest", "{model}", "{data}", "--lake", "{lake}", "--max-length", "1"], 2, "max_length"),
    (["ls", "--lake", "/no/such/lake"], 2, "no lake"),
    (["verify", "--lake", "{file}"], 2, "is a file"),
])
def test_errors_are_one_line_with_exit_code(tmp_path, tiny_gpt2, argv, code, needle):
    data = tmp_path / "c.txt"
    data.write_text("hello world\nsecond doc\n")
    (tmp_path / "f").write_text("x")
    subst = {"{lake}": str(tmp_path / "lake"), "{model}": str(tiny_gpt2), "{data}": str(data),
             "{file}": str(tmp_path / "f")}
    argv = [subst.get(a, a) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAYERLAKE_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "layerlake", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1


def test_cli_is_a_package_with_the_entry_point_of_pyproject():
    import re

    import layerlake.cli
    script = re.search(r'^layerlake = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    module, _, name = script.partition(":")
    assert (module, name) == ("layerlake.cli", "main") and getattr(layerlake.cli, name) is main
    assert Path(layerlake.cli.__file__).name == "__init__.py"


@pytest.mark.slow
def test_quickstart_ingests_computes_and_plots(tmp_path, capsys):
    lake = tmp_path / "qs"
    assert main(["quickstart", "--lake", str(lake), "--docs", "12"]) == 0
    out = capsys.readouterr().out
    assert "12 paragraphs" in out and "pydoc-topics" in out and "twonn_id" in out
    assert (lake / "quickstart-panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import layerlake as ll
    table = ll.Lake(lake, mode="r").sql("SELECT count(DISTINCT metric) FROM metrics").fetchall()
    assert table == [(5,)]
