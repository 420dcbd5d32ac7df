"""Discover: list the input location and match every file to its source by file name.

The input is a folder or URI (``/data/in``, ``file:///data/in``), listed through Hadoop's
FileSystem, so that object stores (``s3a://``, once its jars are on the class path) list the same way. Every file
is either matched to exactly one source (with the snapshot date taken from its name) or reported
as unmatched; nothing is silently ignored. Every matched file gets a SHA-256 of its bytes,
computed in the JVM from the Hadoop stream (any file system, nothing through Python), so a
snapshot already applied is recognised before it is parsed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from pyspark.sql import SparkSession

from leadpipe.config import SourceConfig

log = logging.getLogger(__name__)


class DiscoveryError(ValueError):
    """A file name that cannot be read unambiguously (two sources, or a bad date)."""


@dataclass(frozen=True)
class SnapshotFile:
    uri: str
    name: str
    source_id: str
    snapshot_date: date
    size: int
    checksum: str = ""  # "sha256:<hex>"


@dataclass
class Discovery:
    files: list[SnapshotFile] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def groups(self) -> dict[tuple[date, str], list[SnapshotFile]]:
        """Files by (snapshot_date, source_id), oldest snapshot first."""
        out: dict[tuple[date, str], list[SnapshotFile]] = {}
        for f in sorted(self.files, key=lambda f: (f.snapshot_date, f.source_id, f.name)):
            out.setdefault((f.snapshot_date, f.source_id), []).append(f)
        return out

    def by_date(self) -> dict[date, dict[str, list[SnapshotFile]]]:
        """Snapshot date (oldest first) -> source_id -> its files."""
        out: dict[date, dict[str, list[SnapshotFile]]] = {}
        for (snapshot_date, sid), files in self.groups().items():
            out.setdefault(snapshot_date, {})[sid] = files
        return out


def list_files(spark: SparkSession, location: str) -> list[tuple[str, str, int]]:
    """(uri, name, size) of every file below ``location``, recursively, via Hadoop FS."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(location)
    fs = path.getFileSystem(conf)
    if not fs.exists(path):
        raise FileNotFoundError(f"input location does not exist: {location}")
    out = []
    it = fs.listFiles(path, True)
    while it.hasNext():
        status = it.next()
        p = status.getPath()
        out.append((p.toString(), p.getName(), int(status.getLen())))
    return sorted(out)


def checksum(spark: SparkSession, uri: str) -> str:
    """``sha256:<hex>`` of a file's bytes, streamed through Hadoop FS inside the JVM."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).open(path)
    try:
        return "sha256:" + jvm.org.apache.commons.codec.digest.DigestUtils.sha256Hex(stream)
    finally:
        stream.close()


def match_file(name: str, sources: dict[str, SourceConfig]) -> tuple[str, date] | None:
    """(source_id, snapshot_date) for a file name, None when no source claims it."""
    hits = [(sid, m) for sid, cfg in sources.items() if (m := cfg.matches(name))]
    if not hits:
        return None
    if len(hits) > 1:
        raise DiscoveryError(f"{name}: matches more than one source: {[sid for sid, _ in hits]}")
    sid, m = hits[0]
    raw = m.group("date")
    try:
        snapshot = datetime.strptime(raw, sources[sid].date_format).date()
    except ValueError:
        raise DiscoveryError(
            f"{name}: source {sid}: snapshot date {raw!r} does not match date_format {sources[sid].date_format!r}"
        ) from None
    return sid, snapshot


def discover(spark: SparkSession, location: str, sources: dict[str, SourceConfig]) -> Discovery:
    found = Discovery()
    for uri, name, size in list_files(spark, location):
        if name.startswith((".", "_")):
            log.debug("discover: skipping hidden file %s", uri)
            continue
        hit = match_file(name, sources)
        if hit is None:
            found.unmatched.append(uri)
            log.warning("discover: %s matches no source's file_pattern; not read", uri)
            continue
        found.files.append(SnapshotFile(uri, name, hit[0], hit[1], size, checksum(spark, uri)))
    per_source = {}
    for f in found.files:
        per_source[f.source_id] = per_source.get(f.source_id, 0) + 1
    log.info(
        "discover: %d file(s) matched %s, %d unmatched, in %s",
        len(found.files),
        per_source,
        len(found.unmatched),
        location,
    )
    return found
