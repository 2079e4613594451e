"""`layerlake metric` and `layerlake plot`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from layerlake.cli import main

from .synth import build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two(tmp_path):
    return build(tmp_path, n_docs=8, models={"model-a": (3, 8), "model-b": (4, 8)})


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_metric_csv_json_parquet(two, capsys, tmp_path):
    lake = two.lake.url
    code, out, _ = run(capsys, "metric", "mean_norm", "--lake", lake, "--dataset", "ds", "--format", "csv")
    assert code == 0
    df = pl.read_csv(io.StringIO(out))
    assert df.height == 4 + 5 and set(df["model"]) == {"model-a", "model-b"}
    want = two.lake.metric("mean_norm", dataset="ds")
    np.testing.assert_allclose(df["value"].to_numpy(), want["value"].to_numpy(), rtol=1e-12)
    code, out, _ = run(capsys, "metric", "mean_norm", "--lake", lake, "--dataset", "ds", "--model", "model-b",
                       "--layers", "1,2", "--per", "doc", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2 * 8 and {r["layer"] for r in rows} == {1, 2}
    target = tmp_path / "cka.parquet"
    code, _, err = run(capsys, "metric", "linear_cka", "--lake", lake, "--dataset", "ds", "--model", "model-a",
                       "--model", "model-b", "--param", "match=depth", "--format", "parquet", "--out", str(target))
    assert code == 0 and "wrote 4 row(s)" in err
    got = pl.read_parquet(target)
    assert list(zip(got["layer"], got["layer2"])) == [(0, 0), (1, 1), (2, 3), (3, 4)]  # round(l * 4 / 3)


def test_metric_table_and_explain(two, capsys):
    lake = two.lake.url
    code, out, _ = run(capsys, "metric", "coding_length_entropy", "--lake", lake, "--dataset", "ds",
                       "--model", "model-a", "--param", "eps=1.0", "--explain")
    assert code == 0 and "4 to compute" in out and '"eps":1.0' in out
    code, out, _ = run(capsys, "metric", "coding_length_entropy", "--lake", lake, "--dataset", "ds",
                       "--model", "model-a", "--param", "eps=1.0")
    assert code == 0 and "layer" in out and "sem" in out and "model-a" in out
    code, out, _ = run(capsys, "metric", "coding_length_entropy", "--lake", lake, "--dataset", "ds",
                       "--model", "model-a", "--param", "eps=1", "--explain")
    assert "4 from cache" in out and "nothing to read" in out


def test_metric_errors_list_valid_names(two, capsys):
    lake = two.lake.url
    code, _, err = run(capsys, "metric", "entropyy", "--lake", lake, "--dataset", "ds")
    assert code == 2 and "valid metrics:" in err and "mean_norm" in err
    code, _, err = run(capsys, "metric", "coding_length_entropy", "--lake", lake, "--dataset", "ds",
                       "--param", "epsilon=2")
    assert code == 2 and "valid parameters: ['centre', 'eps']" in err
    code, _, err = run(capsys, "metric", "coding_length_entropy", "--lake", lake, "--dataset", "ds",
                       "--param", "eps=big")
    assert code == 2 and "eps='big'" in err
    code, out, _ = run(capsys, "metric", "--list", "--format", "csv")
    assert code == 0 and "representation_dispersion" in out


def test_plot_and_panel(two, capsys, tmp_path):
    lake = two.lake.url
    out1 = tmp_path / "one.png"
    code, out, _ = run(capsys, "plot", "mean_norm", "--lake", lake, "--dataset", "ds", "--out", str(out1),
                       "--relative-depth")
    assert code == 0 and out1.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = tmp_path / "panel.png"
    code, _, _ = run(capsys, "plot", "--panel", "mean_norm,matrix_entropy,perplexity,layer_cosine", "--lake", lake,
                     "--dataset", "ds", "--out", str(out2), "--param", "rows=pooled")
    assert code == 0 and out2.stat().st_size > out1.stat().st_size
    code, _, err = run(capsys, "plot", "mean_norm", "--lake", lake, "--dataset", "ds", "--out", str(out2),
                       "--param", "nope=1")
    assert code == 2 and "takes parameter 'nope'" in err


def test_cli_subprocess_end_to_end(two, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAYERLAKE_PROGRESS": "0"}
    res = subprocess.run([sys.executable, "-m", "layerlake", "metric", "perplexity", "--lake", two.lake.url,
                          "--dataset", "ds", "--format", "json"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["model"] for r in rows] == ["model-a", "model-b"] and all(r["layer"] is None for r in rows)
