"""The lake's layout: every path and name pattern on disk, in one place.

::

    lake.json
    extractions/<eid>/extraction.json            written once, with the first shard
    extractions/<eid>/aliases/<key>.json         a model id/path as given at ingest
    extractions/<eid>/commits/<sid>.json         commit marker: the shard is visible
    extractions/<eid>/shards/<sid>/              writer.json, docs.parquet, tokens.parquet,
                                                 hidden.zarr/layer_<l>, jacobian.zarr/<key>/layer_<l>/<name>
    extractions/<eid>/.tmp-*                     a shard folder being claimed (renamed into shards/)
    extractions/<eid>/leases/<key>.json          an ingest is running (its writer record): gc keeps the extraction
    datasets/<name>/docs.parquet                 the dataset's documents, in order
    datasets/<name>/links/<eid>.json             the dataset was ingested into extraction <eid>
    metrics/<eid>/<key>.parquet                  one cached metric unit
    .tmp-* (any folder)                          an atomic write in progress

An export adds ``README.md`` and ``MANIFEST.json`` at its root. Functions
return path parts (tuples for :class:`~layerlake.store.fs.LakeFS` methods);
:func:`rel` joins them into the ``/``-separated form manifests use.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..errors import IntegrityError, SpecError

Parts = tuple[str, ...]

LAKE_META = "lake.json"
EXTRACTIONS = "extractions"
DATASETS = "datasets"
METRICS = "metrics"
EXTRACTION_META = "extraction.json"
WRITER_FILE = "writer.json"
DOCS_FILE = "docs.parquet"
TOKENS_FILE = "tokens.parquet"
HIDDEN_GROUP = "hidden.zarr"
JACOBIAN_GROUP = "jacobian.zarr"
TMP_PREFIX = ".tmp-"
EXPORT_MANIFEST = "MANIFEST.json"
EXPORT_CARD = "README.md"

EXTRACTION_ID_RE = re.compile(r"^[0-9a-f]{16}$")
ALIAS_KEY_RE = EXTRACTION_ID_RE
SHARD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
JACOBIAN_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
CACHE_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
#: one path component of a manifest path: no leading dot, no slashes
COMPONENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
MAX_DEPTH = 16

_SID = SHARD_ID_RE.pattern[1:-1]
_NAME = DATASET_NAME_RE.pattern[1:-1]
#: every file a lake (or an export) may hold, with the ids it names
FILE_RE = re.compile(
    r"^(?:lake\.json|README\.md"
    r"|extractions/(?P<eid>[0-9a-f]{16})/(?:extraction\.json|aliases/[0-9a-f]{16}\.json"
    rf"|commits/(?P<commit>{_SID})\.json"
    rf"|shards/(?P<shard>{_SID})/(?P<inner>docs\.parquet|tokens\.parquet|(?:hidden|jacobian)\.zarr(?:/.+)?))"
    rf"|datasets/(?P<dataset>{_NAME})/(?:docs\.parquet|links/(?P<link>[0-9a-f]{{16}})\.json))$"
)
_METRIC_FILE_RE = re.compile(r"^metrics/(?P<eid>[0-9a-f]{16})/(?P<key>[0-9a-f]{32})\.parquet$")


def rel(parts: Parts) -> str:
    """``("a", "b")`` -> ``"a/b"``, the form manifests and listings use."""
    return "/".join(parts)


# -- extractions -----------------------------------------------------------------------------------
def extraction_dir(eid: str) -> Parts:
    return (EXTRACTIONS, eid)


def extraction_meta(eid: str) -> Parts:
    return (EXTRACTIONS, eid, EXTRACTION_META)


def aliases_dir(eid: str) -> Parts:
    return (EXTRACTIONS, eid, "aliases")


def alias_file(eid: str, key: str) -> Parts:
    return (EXTRACTIONS, eid, "aliases", f"{key}.json")


def commits_dir(eid: str) -> Parts:
    return (EXTRACTIONS, eid, "commits")


def commit_marker(eid: str, sid: str) -> Parts:
    return (EXTRACTIONS, eid, "commits", f"{sid}.json")


def commit_ids(names: list[str]) -> list[str]:
    """Shard ids from the names listed in a ``commits/`` folder (temporary files skipped)."""
    return [n[:-5] for n in names if n.endswith(".json") and not is_temp(n)]


def leases_dir(eid: str) -> Parts:
    return (EXTRACTIONS, eid, "leases")


def lease_file(eid: str, key: str) -> Parts:
    return (EXTRACTIONS, eid, "leases", f"{key}.json")


def shards_dir(eid: str) -> Parts:
    return (EXTRACTIONS, eid, "shards")


def shard_dir(eid: str, sid: str) -> Parts:
    return (EXTRACTIONS, eid, "shards", sid)


def shard_file(eid: str, sid: str, name: str) -> Parts:
    """A file of a shard, ``name`` relative to the shard folder (``docs.parquet``, ``hidden.zarr/...``)."""
    return (EXTRACTIONS, eid, "shards", sid, name)


def staging_dir(eid: str) -> Parts:
    """Where shard folders of ``eid`` are built before they are renamed into ``shards/``."""
    return (EXTRACTIONS, eid)


def layer_name(layer: int) -> str:
    """The name of a layer's array or group: ``layer_<l>``."""
    return f"layer_{int(layer)}"


def hidden_group(eid: str, sid: str) -> Parts:
    return (EXTRACTIONS, eid, "shards", sid, HIDDEN_GROUP)


def hidden_array(eid: str, sid: str, layer: int) -> Parts:
    return (EXTRACTIONS, eid, "shards", sid, HIDDEN_GROUP, layer_name(layer))


def hidden_prefix(layer: int) -> str:
    """Prefix of a layer's files relative to the shard folder (as commit markers list them)."""
    return f"{HIDDEN_GROUP}/{layer_name(layer)}/"


def jacobian_group(eid: str, sid: str) -> Parts:
    return (EXTRACTIONS, eid, "shards", sid, JACOBIAN_GROUP)


def jacobian_member(key: str, layer: int, name: str | None = None) -> str:
    """Path inside ``jacobian.zarr`` of a sketch's layer group, or of its array ``name``."""
    return f"{key}/{layer_name(layer)}" + (f"/{name}" if name else "")


# -- datasets --------------------------------------------------------------------------------------
def datasets_dir() -> Parts:
    return (DATASETS,)


def dataset_dir(name: str) -> Parts:
    return (DATASETS, name)


def dataset_docs(name: str) -> Parts:
    return (DATASETS, name, DOCS_FILE)


def links_dir(name: str) -> Parts:
    return (DATASETS, name, "links")


def link_file(name: str, eid: str) -> Parts:
    return (DATASETS, name, "links", f"{eid}.json")


# -- metric cache ----------------------------------------------------------------------------------
def metrics_dir(eid: str | None = None) -> Parts:
    return (METRICS,) if eid is None else (METRICS, eid)


def metric_file(eid: str, key: str) -> Parts:
    return (METRICS, eid, f"{key}.parquet")


def metric_keys(names: list[str]) -> set[str]:
    """Cache keys from the names listed in ``metrics/<eid>/`` (temporary and hidden files skipped)."""
    return {n[:-8] for n in names if n.endswith(".parquet") and not n.startswith(".")}


def metric_file_extraction(path: str) -> str | None:
    """The extraction of a lake-relative path written by the metric cache, or None if it is not one."""
    m = _METRIC_FILE_RE.match(path)
    return m.group("eid") if m else None


# -- names -----------------------------------------------------------------------------------------
def is_temp(name: str) -> bool:
    """Whether a file or folder name is an atomic write or claim in progress."""
    return name.startswith(TMP_PREFIX)


def has_temp_part(path: str) -> bool:
    """Whether any component of a ``/``-separated path is temporary."""
    return any(is_temp(p) for p in path.split("/"))


def check_dataset_name(name: Any) -> str:
    """``name`` if it is a valid dataset name, else :class:`SpecError` saying what is allowed."""
    if not isinstance(name, str) or not DATASET_NAME_RE.match(name):
        raise SpecError(
            f"dataset name {name!r} is invalid; use letters, digits, '.', '_' or '-' (max 128, no slashes)"
        )
    return name


def check_name(value: Any, pattern: re.Pattern[str], what: str, *, where: str = "manifest") -> str:
    """``value`` if it matches ``pattern``; an untrusted name that does not raises :class:`IntegrityError`."""
    if not isinstance(value, str) or not pattern.match(value):
        raise IntegrityError(f"{where}: {what} {value!r} does not match {pattern.pattern}; refusing the import")
    return value


def safe_relpath(path: Any, *, where: str = "manifest") -> str:
    """A relative POSIX path read from a manifest, every component matching :data:`COMPONENT_RE`.

    Rejects absolute paths, ``..`` and ``.``, empty components, backslashes,
    drive letters, hidden files and anything deeper than :data:`MAX_DEPTH`.
    """
    if not isinstance(path, str) or not path:
        raise IntegrityError(f"{where}: path {path!r} is not a non-empty string; refusing to use it")
    if path.startswith("/") or "\\" in path or ":" in path.split("/")[0]:
        raise IntegrityError(f"{where}: path {path!r} is absolute or not POSIX; refusing to use it")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise IntegrityError(f"{where}: path {path!r} is deeper than {MAX_DEPTH} levels; refusing to use it")
    for part in parts:
        if part in ("", ".", "..") or not COMPONENT_RE.match(part):
            raise IntegrityError(
                f"{where}: path {path!r} has an unsafe component {part!r} (allowed: letters, digits, '.', '_', '-', "
                "not starting with '.'); refusing to use it")
    return path


@dataclasses.dataclass(frozen=True)
class LakeFile:
    """What a lake-relative path names (see :data:`FILE_RE`); ``None`` fields do not apply."""

    path: str
    extraction: str | None = None
    commit: str | None = None        # shard id of a commit marker
    shard: str | None = None         # shard id of a shard file
    inner: str | None = None         # path inside the shard folder
    dataset: str | None = None
    link: str | None = None          # extraction id of a dataset link


def parse_file(path: str) -> LakeFile | None:
    """Classify a lake-relative path; None if the layout has no such file."""
    m = FILE_RE.match(path)
    if m is None:
        return None
    return LakeFile(path=path, extraction=m.group("eid"), commit=m.group("commit"), shard=m.group("shard"),
                    inner=m.group("inner"), dataset=m.group("dataset"), link=m.group("link"))
