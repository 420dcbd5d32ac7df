"""Archive: move each processed input file from the active location to ``<archive>/<snapshot date>/``.

Guarantees:

- **Never before delivery.** The job archives only at the end of a run whose delivery
  succeeded, and only files whose snapshot is in the leads table (``applied``,
  ``already_applied``) or was read only to be quarantined (``stale``). A held, failed, rejected
  or unmatched file stays where it is, for the operator and the next run.
- **Nothing lost.** A move is copy, verify (size and SHA-256 of the copy equal the file's, as
  discovery recorded them), then delete. A kill at any moment leaves the file in the active
  location, or both copies, or only the verified copy; the next run finishes the move.
- **Safe to repeat.** A copy already in the archive with the same bytes is taken as done (the
  active file is deleted); one with other bytes is never overwritten: the file stays and the
  run reports a conflict.

Paths keep the file's place below the input (``active/tx/x.csv`` -> ``<archive>/<date>/tx/x.csv``),
so two files of the same name in different folders never collide. Any Hadoop file system works
(local, ``s3://``, ``s3a://``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from leadpipe import faults
from leadpipe.discover import SnapshotFile, checksum

log = logging.getLogger(__name__)


@dataclass
class ArchiveResult:
    targets: list[str | None] = field(default_factory=list)  # per file: its archive copy, None if not moved
    conflicts: list[str] = field(default_factory=list)  # messages: archive copy with other bytes
    failed: list[str] = field(default_factory=list)  # messages: the move did not complete


def destination(archive: str, root: str, f: SnapshotFile) -> str:
    """Where a file goes: ``<archive>/<snapshot date>/<its path below root>`` (``root``: the
    input, qualified as the file's URI is)."""
    rel = f.uri[len(root) :].lstrip("/") if f.uri.startswith(root) else f.name
    return f"{archive.rstrip('/')}/{f.snapshot_date.isoformat()}/{rel}"


def _raw(fs):
    """The local file system without Hadoop's ``.crc`` side files (an archive holds the agency's
    files only); any other file system as it is."""
    return fs.getRawFileSystem() if fs.getScheme() == "file" else fs


def archive_files(spark: SparkSession, files: list[SnapshotFile], input_uri: str, archive: str) -> ArchiveResult:
    """Move ``files`` below ``archive`` (see the module's guarantees)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    result = ArchiveResult()
    top = jvm.org.apache.hadoop.fs.Path(input_uri)
    root = top.getFileSystem(conf).makeQualified(top).toString().rstrip("/") + "/"
    for f in files:
        target = destination(archive, root, f)
        src = jvm.org.apache.hadoop.fs.Path(f.uri)
        dst = jvm.org.apache.hadoop.fs.Path(target)
        src_fs, dst_fs = _raw(src.getFileSystem(conf)), _raw(dst.getFileSystem(conf))
        try:
            if dst_fs.makeQualified(dst).toString() == src_fs.makeQualified(src).toString():
                result.targets.append(target)  # read from the archive itself: already where it belongs
                continue
            if dst_fs.exists(dst):
                if checksum(spark, target) != f.checksum:
                    message = f"{f.name}: {target} exists with other bytes; not overwritten, {f.uri} left in place"
                    log.error("archive: %s", message)
                    result.conflicts.append(message)
                    result.targets.append(None)
                    continue
            else:
                faults.reach("before_archive")
                if not jvm.org.apache.hadoop.fs.FileUtil.copy(src_fs, src, dst_fs, dst, False, conf):
                    raise OSError(f"copy of {f.uri} to {target} returned false")
                size = int(dst_fs.getFileStatus(dst).getLen())
                if size != f.size or checksum(spark, target) != f.checksum:
                    dst_fs.delete(dst, False)
                    raise OSError(f"the copy at {target} differs from {f.uri} (size {size}, expected {f.size})")
            if src_fs.exists(src) and not src_fs.delete(src, False):
                raise OSError(f"could not delete {f.uri} after copying it to {target}")
            result.targets.append(target)
        except Exception as exc:
            message = f"{f.name}: not archived: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            log.error("archive: %s", message)
            result.failed.append(message)
            result.targets.append(None)
    log.info(
        "archive: %d file(s) moved to %s, %d conflict(s), %d failed",
        sum(t is not None for t in result.targets),
        archive,
        len(result.conflicts),
        len(result.failed),
    )
    return result
