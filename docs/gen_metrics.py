#!/usr/bin/env python
"""Regenerate the metric reference table of docs/metrics.md from the registry.

    python docs/gen_metrics.py          # rewrite the table in place
    python docs/gen_metrics.py --check  # exit 1 if docs/metrics.md is out of date (a test runs this)

Only the block between the BEGIN/END markers is generated; the rest of the page
is hand-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOC = ROOT / "docs" / "metrics.md"
BEGIN = "<!-- BEGIN GENERATED METRIC TABLE (python docs/gen_metrics.py) -->"
END = "<!-- END GENERATED METRIC TABLE -->"

KIND_NOTE = {
    "doc_hidden": "tokens of one document at one layer",
    "doc_nll": "per-token losses of one document",
    "pooled": "mean-pooled documents at one layer",
    "token_cloud": "all tokens of the dataset at one layer (subsampled)",
    "views": "pooled augmented views per document",
    "layer_pair": "the same rows at two layers / two models",
    "doc_trajectory": "one document across the requested layers",
    "jacobian_sketch": "Jacobian sketches (not served by the engine yet)",
}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def render_table() -> str:
    from layerlake.metrics import list_metrics
    lines = ["| metric | input | granularity | parameters (defaults) | direction | source | what it measures |",
             "|---|---|---|---|---|---|---|"]
    for d in list_metrics():
        params = ", ".join(f"`{k}={v!r}`" for k, v in d.params.items()) or "-"
        name = f"`{d.name}`@{d.version}" + (" (provisional)" if d.provisional else "")
        lines.append(f"| {name} | `{d.input}` | {d.granularity} | {_cell(params)} | {d.direction} | "
                     f"{_cell(d.source)} | {_cell(d.description)} |")
    kinds = sorted({d.input for d in list_metrics()})
    lines += ["", "Inputs: " + "; ".join(f"`{k}` = {KIND_NOTE.get(k, k)}" for k in kinds) + "."]
    return "\n".join(lines)


def updated(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC}: markers {BEGIN!r} / {END!r} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render_table()}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = ap.parse_args()
    text = DOC.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run python docs/gen_metrics.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
