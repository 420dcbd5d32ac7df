"""Discover: list the input location and match every file to its source by file name.

The input is a folder or URI (``/data/in``, ``file:///data/in``), listed through Hadoop's
FileSystem, so that object stores (``s3a://``, once its jars are on the class path) list the same way. Every file
is either matched to exactly one source (with the snapshot date taken from its name) or reported
as unmatched, or rejected alone when its name cannot be read unambiguously (``bad_file_date``:
the date in the name does not parse; ``ambiguous_source``: two sources claim it; ``unreadable``:
its bytes cannot be read for the checksum); nothing is
silently ignored and one bad name never stops the run. Every matched file gets a SHA-256 of its bytes,
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


BAD_FILE_DATE = "bad_file_date"
AMBIGUOUS_SOURCE = "ambiguous_source"
UNREADABLE = "unreadable"


class DiscoveryError(ValueError):
    """A file name that cannot be read unambiguously (two sources, or a bad date)."""

    def __init__(self, message: str, reason: str, source_id: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.source_id = source_id


@dataclass(frozen=True)
class RejectedName:
    """A file left out at discovery: its name does not say unambiguously what it is."""

    uri: str
    name: str
    size: int
    reason: str
    message: str
    source_id: str | None = None
    snapshot_date: date | None = None  # when the name did give it (an unreadable file)


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
    sizes: dict[str, int] = field(default_factory=dict)  # uri -> bytes, of every file listed
    rejected: list[RejectedName] = field(default_factory=list)

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
        raise DiscoveryError(
            f"{name}: matches more than one source: {[sid for sid, _ in hits]}; make their file_pattern exclusive",
            AMBIGUOUS_SOURCE,
        )
    sid, m = hits[0]
    raw = m.group("date")
    try:
        snapshot = datetime.strptime(raw, sources[sid].date_format).date()
    except ValueError:
        raise DiscoveryError(
            f"{name}: source {sid}: snapshot date {raw!r} does not match date_format {sources[sid].date_format!r}; "
            "rename the file with the export's date",
            BAD_FILE_DATE,
            sid,
        ) from None
    return sid, snapshot


def discover(spark: SparkSession, location: str, sources: dict[str, SourceConfig]) -> Discovery:
    found = Discovery()
    for uri, name, size in list_files(spark, location):
        if name.startswith((".", "_")):
            log.debug("discover: skipping hidden file %s", uri)
            continue
        found.sizes[uri] = size
        try:
            hit = match_file(name, sources)
        except DiscoveryError as exc:
            found.rejected.append(RejectedName(uri, name, size, exc.reason, str(exc), exc.source_id))
            log.error("discover: %s rejected (%s): %s", uri, exc.reason, exc)
            continue
        if hit is None:
            found.unmatched.append(uri)
            log.warning("discover: %s matches no source's file_pattern; not read", uri)
            continue
        try:
            digest = checksum(spark, uri)
        except Exception as exc:  # vanished since the listing, permissions, object store errors
            message = f"could not read the file: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            found.rejected.append(RejectedName(uri, name, size, UNREADABLE, message, hit[0], hit[1]))
            log.error("discover: %s rejected (%s)", uri, UNREADABLE)
            continue
        found.files.append(SnapshotFile(uri, name, hit[0], hit[1], size, digest))
    per_source = {}
    for f in found.files:
        per_source[f.source_id] = per_source.get(f.source_id, 0) + 1
    log.info(
        "discover: %d file(s) matched %s, %d unmatched, %d rejected by name, in %s",
        len(found.files),
        per_source,
        len(found.unmatched),
        len(found.rejected),
        location,
    )
    return found
