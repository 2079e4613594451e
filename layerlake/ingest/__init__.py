"""Ingest: model loading and fingerprinting, text sources, tokenization and
batching, capture of hidden states / losses / Jacobian sketches, the writer
pipeline and executors (local, Ray). The only part that knows models exist.
"""

from .models import LoadedModel, load_model
from .pipeline import IngestResult, ingest
from .sources import Corpus, Document, load_corpus

__all__ = ["LoadedModel", "load_model", "IngestResult", "ingest", "Corpus", "Document", "load_corpus"]
