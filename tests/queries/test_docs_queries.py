"""Every SQL and Python block of docs/queries.md runs on a small lake shaped like the quickstart one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
BLOCK = re.compile(r"```(sql|python|bash)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall(DOC.read_text()) if k == kind]


@pytest.fixture(scope="module")
def doclake(tmp_path_factory, tiny_gpt2, minilm):
    """30 paragraphs of pydoc topics x (real MiniLM, tiny causal GPT-2), dataset 'pydoc-topics'."""
    import layerlake as ll
    from layerlake.cli.quickstart import quickstart_corpus
    lake = ll.Lake(tmp_path_factory.mktemp("doclake") / "lake")
    docs = quickstart_corpus(30)
    lake.ingest(minilm, docs, dataset="pydoc-topics", model_name="all-MiniLM-L6-v2", max_length=128, progress=False)
    lake.ingest(str(tiny_gpt2), docs, dataset="pydoc-topics", model_name="tiny-gpt2", max_length=128, progress=False)
    return lake


def test_the_page_has_enough_worked_queries():
    assert len(blocks("sql")) + len(blocks("python")) >= 10
    assert len(blocks("sql")) >= 8


@pytest.mark.parametrize("i", range(len(blocks("sql"))))
def test_sql_block(doclake, i):
    rows = doclake.sql(blocks("sql")[i]).fetchall()
    assert rows, f"query {i + 1} returned no rows"
    assert all(any(v is not None for v in r) for r in rows)


@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_python_block(doclake, i, capsys):
    from layerlake.queries import sql as sqlmod
    before = list(sqlmod._EXTENSIONS)
    try:
        exec(compile(blocks("python")[i], f"docs/queries.md python block {i + 1}", "exec"), {"lake": doclake})
    finally:
        sqlmod._EXTENSIONS[:] = before
    assert capsys.readouterr().out.strip()


def test_cli_blocks(doclake, capsys):
    from layerlake.cli import main
    lines = [l for b in blocks("bash") for l in b.replace("\\\n", " ").splitlines() if l.startswith("layerlake sql")]
    assert lines
    for line in lines:
        argv = shlex.split(line)[1:]
        argv = [doclake.store.fs.root if a == "layerlake-quickstart" else a for a in argv]
        if "--out" in argv:
            k = argv.index("--out")
            argv[k + 1] = str(Path(doclake.store.fs.root).parent / argv[k + 1])
        assert main(argv) == 0
        assert capsys.readouterr().out.strip() or "--out" in argv
