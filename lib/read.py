"""Read: one source's CSV files for one snapshot -> raw rows, every source column a string.

Reading never infers types and never drops a row. A record that does not parse (fewer fields
than the header, or a file that ends inside an open quote) is kept with its text in
``_corrupt_record`` so that validation can quarantine it. Every row carries its file and its
record number within the file (1 = first data row), so any error can name file, record and
column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.config import SourceConfig
from leadpipe.discover import SnapshotFile
from leadpipe.expressions import date_value

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
META_COLUMNS = ("_source_file", "_snapshot_date", "_record_no", CORRUPT)


class SchemaDriftError(ValueError):
    """A file's header lacks columns the source's rules need."""


@dataclass
class HeaderCheck:
    file: str
    columns: list[str]
    missing: list[str] = field(default_factory=list)
    missing_required: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def csv_options(cfg: SourceConfig) -> dict[str, str]:
    return {
        "header": "true",
        "encoding": cfg.csv.encoding,
        "multiLine": str(cfg.csv.multi_line).lower(),
        "quote": cfg.csv.quote,
        "escape": cfg.csv.escape,
        "sep": cfg.csv.delimiter,
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": CORRUPT,
        "inferSchema": "false",
        # keep values as the agency wrote them; standardization trims
        "ignoreLeadingWhiteSpace": "false",
        "ignoreTrailingWhiteSpace": "false",
    }


def header_columns(spark: SparkSession, uri: str, cfg: SourceConfig) -> list[str]:
    """The file's header, as Spark names it (a blank name at position i is ``_c{i}``);
    duplicate names get a ``_2``, ``_3`` suffix."""
    opts = {k: v for k, v in csv_options(cfg).items() if k not in ("mode", "columnNameOfCorruptRecord")}
    names = spark.read.options(**opts).csv(uri).columns
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def check_header(uri: str, columns: list[str], cfg: SourceConfig) -> HeaderCheck:
    expected = set(cfg.columns)
    needed = set(cfg.key_columns) | {c for f in cfg.fields for c in f.inputs}
    missing = [c for c in cfg.columns if c not in columns]
    return HeaderCheck(
        file=uri,
        columns=columns,
        missing=missing,
        missing_required=[c for c in missing if c in needed],
        extra=[c for c in columns if c not in expected],
    )


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


def read_file(spark: SparkSession, f: SnapshotFile, columns: list[str], cfg: SourceConfig) -> DataFrame:
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in columns] + [T.StructField(CORRUPT, T.StringType())]
    )
    df = spark.read.schema(schema).options(**csv_options(cfg)).csv(f.uri)
    return df.select(
        *[F.col(f"`{c}`") for c in columns],
        F.col(CORRUPT),
        F.lit(f.uri).alias("_source_file"),
        F.col("_metadata.file_path").alias("__path"),
        F.col("_metadata.file_block_start").alias("__block"),
    )


def read_source(
    spark: SparkSession, files: list[SnapshotFile], cfg: SourceConfig, snapshot_date: date
) -> tuple[DataFrame, list[HeaderCheck]]:
    """All files of one source and snapshot -> one raw DataFrame.

    Columns: the source's configured ``columns`` (a column absent from a file is NULL there),
    any extra columns the files have, then ``_source_file``, ``_snapshot_date``, ``_record_no``
    and ``_corrupt_record``. Raises :class:`SchemaDriftError` naming the file and the columns
    when a file lacks a column that a rule reads: mapping it would silently blank a field.
    """
    checks = []
    frames = []
    for f in files:
        columns = header_columns(spark, f.uri, cfg)
        check = check_header(f.uri, columns, cfg)
        checks.append(check)
        if check.missing_required:
            raise SchemaDriftError(
                f"{f.uri}: header lacks column(s) {check.missing_required} that source {cfg.id} "
                f"({cfg.path}) reads; header is {columns}"
            )
        if check.missing:
            log.warning("read: %s lacks optional column(s) %s; they read as NULL", f.uri, check.missing)
        if check.extra:
            log.warning("read: %s has column(s) %s not in %s; kept in raw only", f.uri, check.extra, cfg.path)
        frames.append(read_file(spark, f, columns, cfg))
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other, allowMissingColumns=True)
    for c in cfg.columns:
        if c not in df.columns:
            df = df.withColumn(c, F.lit(None).cast("string"))
    df = df.withColumn("_snapshot_date", date_value(snapshot_date, F.col("__path")))  # compiled once
    df = with_record_numbers(df)
    source_cols = list(cfg.columns) + [c for c in df.columns if c not in cfg.columns and c not in META_COLUMNS]
    return df.select(*[F.col(f"`{c}`") for c in source_cols], *META_COLUMNS), checks


def source_columns(df: DataFrame) -> list[str]:
    return [c for c in df.columns if c not in META_COLUMNS]
