"""docs/metrics.md's metric table is generated from the registry and must be up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_metric_table_is_in_sync_with_the_registry():
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_metrics.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr + " (run: python docs/gen_metrics.py)"


def test_every_metric_is_in_the_table():
    from layerlake.metrics import REGISTRY
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in text for name in REGISTRY)
