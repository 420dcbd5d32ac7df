"""Read: one source's CSV files for one snapshot (or, in a backfill, for many) -> raw rows,
every source column a string.

Each file is read as sniff.py decided (encoding, delimiter, which header position is which
configured column); a file sniff.py rejected is never read. Reading never infers types and
never drops a row. A record that does not parse (fewer or more
fields than the header, or a file that ends inside an open quote) is kept with its text in
``_corrupt_record`` so that validation can quarantine it. Every row carries its file and its
record number within the file (1 = first data row), so any error can name file, record and
column.
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.config import SourceConfig, java_charset
from leadpipe.discover import SnapshotFile
from leadpipe.expressions import column, date_value
from leadpipe.sniff import FileFormat

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
META_COLUMNS = ("_source_file", "_snapshot_date", "_record_no", CORRUPT)


def csv_options(cfg: SourceConfig, fmt: FileFormat | None = None) -> dict[str, str]:
    """Spark's CSV options for a source's file: its sniffed format (sniff.py) when given, else the
    source's configured encoding, delimiter and multi-line setting."""
    return {
        "header": "true",
        "encoding": fmt.java_encoding if fmt else (java_charset(cfg.csv.encoding) or cfg.csv.encoding),
        "multiLine": str(fmt.multi_line if fmt else cfg.csv.multi_line).lower(),
        "quote": cfg.csv.quote,
        "escape": cfg.csv.escape,
        "sep": fmt.delimiter if fmt else cfg.csv.delimiter,
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": CORRUPT,
        "inferSchema": "false",
        # keep values as the agency wrote them; standardization trims
        "ignoreLeadingWhiteSpace": "false",
        "ignoreTrailingWhiteSpace": "false",
    }


def with_record_numbers(df: DataFrame) -> DataFrame:
    """Add ``_record_no``: the 1-based position of each row within its file.

    Spark reads a large file in several splits; ``monotonically_increasing_id`` is ordered
    within a split, and ``_metadata.file_block_start`` orders the splits of a file. Counting
    rows per split (a tiny aggregate) gives each split's offset without sorting the data.
    """
    # __path is the file as a real column: a literal partition key would be optimized away
    df = df.withColumn("__mid", F.monotonically_increasing_id())
    blocks = df.groupBy("__path", "__block").agg(F.count(F.lit(1)).alias("__n"), F.min("__mid").alias("__first"))
    w = Window.partitionBy("__path").orderBy("__block").rowsBetween(Window.unboundedPreceding, -1)
    blocks = blocks.withColumn("__offset", F.coalesce(F.sum("__n").over(w), F.lit(0)))
    df = df.join(F.broadcast(blocks.drop("__n")), ["__path", "__block"])
    return df.withColumn("_record_no", (F.col("__offset") + F.col("__mid") - F.col("__first") + 1).cast("long")).drop(
        "__mid", "__first", "__offset", "__block", "__path"
    )


def read_file(spark: SparkSession, f: SnapshotFile, fmt: FileFormat, cfg: SourceConfig) -> DataFrame:
    """One file, its header positions named as ``fmt`` says (Spark reads by position)."""
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in fmt.columns] + [T.StructField(CORRUPT, T.StringType())]
    )
    df = spark.read.schema(schema).options(**csv_options(cfg, fmt)).csv(f.uri)
    return df.select(
        *[column(c) for c in fmt.columns],
        F.col(CORRUPT),
        F.lit(f.uri).alias("_source_file"),
        F.col("_metadata.file_path").alias("__path"),
        F.col("_metadata.file_block_start").alias("__block"),
    )


def read_source(
    spark: SparkSession, files: list[tuple[SnapshotFile, FileFormat]], cfg: SourceConfig, snapshot_date: date
) -> DataFrame:
    """All files of one source and snapshot, each with its sniffed format -> one raw DataFrame.

    Columns: the source's configured ``columns`` (a column absent from a file is NULL there),
    any extra columns the files have, then ``_source_file``, ``_snapshot_date``, ``_record_no``
    and ``_corrupt_record``.
    """
    return read_snapshots(spark, [(f, fmt, snapshot_date) for f, fmt in files], cfg)


def read_snapshots(
    spark: SparkSession,
    files: list[tuple[SnapshotFile, FileFormat, date]],
    cfg: SourceConfig,
    log_warnings: bool = True,
) -> DataFrame:
    """:func:`read_source` of files of one source that may belong to several snapshots (a
    backfill reads them in one plan): each file's rows carry its own ``_snapshot_date``. The
    files' sniff warnings are logged unless ``log_warnings`` is False (a read ahead of a
    snapshot's turn, which logs them)."""
    frames = []
    for f, fmt, snapshot_date in files:
        for warning in fmt.warnings if log_warnings else []:
            log.warning("read: %s: %s", f.name, warning)
        frame = read_file(spark, f, fmt, cfg)
        frames.append(frame.withColumn("_snapshot_date", date_value(snapshot_date, F.col("__path"))))  # compiled once
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other, allowMissingColumns=True)
    for c in cfg.columns:
        if c not in df.columns:
            df = df.withColumn(c, F.lit(None).cast("string"))
    df = with_record_numbers(df)
    if any(fmt.multi_line for _, fmt, _ in files):
        df = spread(spark, df, sum(f.size for f, _, _ in files))
    source_cols = list(cfg.columns) + [c for c in df.columns if c not in cfg.columns and c not in META_COLUMNS]
    return df.select(*[column(c) for c in source_cols], *META_COLUMNS)


#: Bytes of CSV per partition after a multi-line read (about 100,000 rows of Oklahoma's layout).
SPREAD_BYTES = 48 * 1024 * 1024


def spread(spark: SparkSession, df: DataFrame, size: int) -> DataFrame:
    """Rows of a multi-line read spread over the cluster's cores. Spark cannot split a file read
    with ``multiLine`` (a record may cross any split), so each such file is one task, and every
    rule after the read would run on one core: at 200,000 Oklahoma rows that was three minutes
    of one core while the other idled. The hash of (file, record number) keeps the spread the
    same on a retried task."""
    parts = max(2 * spark.sparkContext.defaultParallelism, -(-size // SPREAD_BYTES))
    return df.repartition(parts, "_source_file", "_record_no")


def source_columns(df: DataFrame) -> list[str]:
    return [c for c in df.columns if c not in META_COLUMNS]


class FileRejectedError(ValueError):
    """A file sniff.py will not read; the message names the file and the reason code."""


def read_files(spark: SparkSession, files: list[SnapshotFile], cfg: SourceConfig, snapshot_date: date) -> DataFrame:
    """Sniff then read (tools and tests; the job records rejections instead of raising):
    :func:`read_source` of the files, or :class:`FileRejectedError` for the first rejected one."""
    from leadpipe.sniff import Rejection, inspect_file

    formats = []
    for f in files:
        fmt = inspect_file(spark, f.uri, f.size, cfg)
        if isinstance(fmt, Rejection):
            raise FileRejectedError(f"{f.uri}: {fmt.reason}: {fmt.message}")
        formats.append((f, fmt))
    return read_source(spark, formats, cfg, snapshot_date)
