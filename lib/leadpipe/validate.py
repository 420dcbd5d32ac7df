"""Validate / quarantine: split canonical rows into leads and quarantined rows, each with a reason.

Nothing is dropped: every row read ends up in exactly one of the two outputs.

Reasons:
- ``runaway_quote``: a cell of a column the source does not declare multi-line
  (``csv.multi_line_columns``) holds a line break, or one that is holds more than
  ``csv.multi_line_max_lines`` lines: an unclosed quote has swallowed what follows
  it, often whole records, into one cell. The raw text (the ``raw`` map) is kept.
- ``malformed_record``: the CSV record did not parse (fewer or more fields than the header, or
  the file ended inside an open quote); its raw text is kept.
- ``missing_business_key``: an identity cell (the source's ``identity.columns``) is blank, so
  the row cannot have a stable lead_id.
- ``duplicate_business_key``: another row of the same snapshot has the same lead_id. The row
  with the most filled business fields is kept (ties: the earliest record); the others are
  quarantined naming the kept record. A MERGE never sees duplicate keys.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import (
    BUSINESS_COLUMNS,
    ISSUES_COLUMN,
    LEAD_COLUMNS,
    RAW_COLUMN,
    RAW_HASH_COLUMN,
    RECORD_COLUMN,
    RULES_VERSION_COLUMN,
)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType()),
        T.StructField("source", T.StringType()),
        T.StructField("source_file", T.StringType()),
        T.StructField("snapshot_date", T.DateType()),
        T.StructField("record_no", T.LongType()),
        T.StructField("reason", T.StringType()),
        T.StructField("detail", T.StringType()),
        T.StructField("lead_id", T.StringType()),
        T.StructField("raw", T.MapType(T.StringType(), T.StringType())),
        T.StructField("raw_record", T.StringType()),
    ]
)

LEAD_ROW_COLUMNS = [*LEAD_COLUMNS, RAW_COLUMN, ISSUES_COLUMN, RAW_HASH_COLUMN, RULES_VERSION_COLUMN, RECORD_COLUMN]


def _filled_count() -> Column:
    total = F.lit(0)
    for c in BUSINESS_COLUMNS:
        total = total + F.when(F.col(c).isNotNull(), 1).otherwise(0)
    return total


REASON = "_reason"
DETAIL = "_detail"


def runaway(multi_line: dict[str, tuple[list[str], int]]) -> tuple[Column, Column]:
    """(is a runaway quote, which columns) for rows with a ``raw`` map and ``source``: a line break
    in a cell of a column not in its source's multi-line columns, or more lines than its maximum
    in one that is. ``multi_line``: source -> (multi-line columns, maximum lines per cell); only
    these sources are checked: a file read line by line cannot have a line break in a cell."""
    if not multi_line:
        return F.lit(False), F.lit(None).cast("string")
    none = F.array().cast("array<string>")
    by_source = F.create_map(
        *[
            x
            for sid, (cols, _) in multi_line.items()
            for x in (F.lit(sid), F.array(*[F.lit(c) for c in cols]).cast("array<string>"))
        ]
    )
    max_lines = F.create_map(*[x for sid, (_, n) in multi_line.items() for x in (F.lit(sid), F.lit(n))])
    allowed = F.coalesce(by_source[F.col("source")], none)

    def broken(k: Column, v: Column) -> Column:
        has_break = (F.instr(v, "\n") > 0) | (F.instr(v, "\r") > 0)
        too_long = F.size(F.split(v, "\r\n|\r|\n")) > max_lines[F.col("source")]
        return has_break & (~F.array_contains(allowed, k) | too_long)

    columns = F.when(F.col("source").isin(*multi_line), F.map_keys(F.map_filter(F.col(RAW_COLUMN), broken)))
    return F.coalesce(F.size(columns) > 0, F.lit(False)), F.array_join(columns, ", ")


def tag(
    canonical: DataFrame,
    business_keys: dict[str, list[str]],
    stale: dict[str, str] | None = None,
    multi_line: dict[str, tuple[list[str], int]] | None = None,
) -> DataFrame:
    """Add ``_reason`` / ``_detail`` to every row: NULL for a lead, else why it is quarantined.

    ``business_keys`` names each source's identity columns (for the message); ``stale`` maps a source
    whose snapshot must not be merged to the explanation; ``multi_line`` gives, for each source
    whose files were read multi-line, the columns whose cells may hold line breaks and how many
    lines at most (``runaway_quote`` otherwise). Pure: no I/O.

    Here the duplicate ranking is a window over the rows themselves. The job gets the same tags
    in two passes, so that the wide rows are never shuffled: it writes :func:`tag_rows`, finds
    :func:`duplicates` from four narrow columns of theirs, then :func:`mark_duplicates`.
    """
    rows = tag_rows(canonical, business_keys, stale, multi_line)
    w = Window.partitionBy(F.when(F.col(REASON).isNull(), F.col("lead_id"))).orderBy(*_ranking())
    ranked = rows.withColumn("_kept", F.first(_kept()).over(w))
    return _tag_duplicates(ranked, F.col(REASON).isNull() & (F.row_number().over(w) > 1))


#: Filled business fields of a row (the duplicate ranking's first key), kept by ``tag_rows``.
FILLED = "_filled"


def _ranking() -> list[Column]:
    """Among the untagged rows of a lead_id, the first is kept: most filled fields, then earliest."""
    return [F.col(FILLED).desc(), F.col("source_file"), F.col(RECORD_COLUMN)]


def _kept() -> Column:
    return F.concat(F.col("source_file"), F.lit(" record "), F.col(RECORD_COLUMN).cast("string"))


def _tag_duplicates(df: DataFrame, dup: Column) -> DataFrame:
    """``duplicate_business_key`` where ``dup``, naming the record in ``_kept``; drops the helpers."""
    return (
        df.withColumn("_dup", dup)
        .withColumn(REASON, F.when(F.col("_dup"), F.lit("duplicate_business_key")).otherwise(F.col(REASON)))
        .withColumn(
            DETAIL,
            F.when(
                F.col("_dup"),
                F.concat(F.lit("lead_id "), F.col("lead_id"), F.lit(" also at "), F.col("_kept"), F.lit(" (kept)")),
            ).otherwise(F.col(DETAIL)),
        )
        .drop("_dup", "_kept", "_dup_file", "_dup_record", FILLED)
    )


def tag_rows(
    canonical: DataFrame,
    business_keys: dict[str, list[str]],
    stale: dict[str, str] | None = None,
    multi_line: dict[str, tuple[list[str], int]] | None = None,
) -> DataFrame:
    """The reasons a row has on its own (stale, runaway quote, malformed, no key), in
    ``_reason`` / ``_detail``, and its filled business fields in ``_filled``: every tag but
    ``duplicate_business_key``, which needs the other rows (``mark_duplicates``). Row by row."""
    stale = stale or {}
    is_runaway, runaway_cols = runaway(multi_line or {})
    key_text = F.create_map(*[x for sid, keys in business_keys.items() for x in (F.lit(sid), F.lit(", ".join(keys)))])
    is_stale = F.col("source").isin(*stale) if stale else F.lit(False)
    stale_text = (
        F.create_map(*[x for sid, why in stale.items() for x in (F.lit(sid), F.lit(why))])[F.col("source")]
        if stale
        else F.lit(None).cast("string")
    )
    reason = (
        F.when(is_stale, F.lit("stale_snapshot"))
        .when(is_runaway, F.lit("runaway_quote"))
        .when(F.col("_corrupt_record").isNotNull(), F.lit("malformed_record"))
        .when(F.col("lead_id").isNull(), F.lit("missing_business_key"))
    )
    detail = (
        F.when(is_stale, stale_text)
        .when(
            is_runaway,
            F.concat(
                F.lit("line break in column(s) "),
                runaway_cols,
                F.lit(
                    ", which the source does not declare multi-line: an unclosed quote swallowed the text after it "
                    "(often the following records); raw text kept"
                ),
            ),
        )
        .when(
            F.col("_corrupt_record").isNotNull(),
            F.lit(
                "record does not parse: fewer or more fields than the header, or an unclosed quote (the file may end "
                "inside it)"
            ),
        )
        .when(
            F.col("lead_id").isNull(),
            F.concat(F.lit("identity column(s) ("), key_text[F.col("source")], F.lit(") blank: no lead_id")),
        )
    )
    return canonical.withColumn(REASON, reason).withColumn(DETAIL, detail).withColumn(FILLED, _filled_count())


def duplicates(rows: DataFrame) -> DataFrame:
    """Of rows tagged by :func:`tag_rows`: each row (``source_file``, ``record_no``) that another
    untagged row of the same lead_id beats, with the record kept (``_kept``). The row with the most
    filled business fields is kept, ties to the earliest file and record; tagged rows never win.
    Reads five narrow columns and the window shuffles four of them (lead_id, _filled, source_file,
    record_no), never the wide rows."""
    ranked = rows.filter(F.col(REASON).isNull()).select("lead_id", FILLED, "source_file", RECORD_COLUMN)
    w = Window.partitionBy("lead_id").orderBy(*_ranking())
    return (
        ranked.withColumn("_rank", F.row_number().over(w))
        .withColumn("_kept", F.first(_kept()).over(w))
        .filter(F.col("_rank") > 1)
        .select("source_file", RECORD_COLUMN, "_kept")
    )


def mark_duplicates(rows: DataFrame, dups: DataFrame) -> DataFrame:
    """``rows`` (from :func:`tag_rows`, read back from where they were written) with
    ``duplicate_business_key`` on the rows ``dups`` (from :func:`duplicates`) names, without
    ``_filled``: what :func:`tag` returns for the same rows."""
    d = dups.select(F.col("source_file").alias("_dup_file"), F.col(RECORD_COLUMN).alias("_dup_record"), "_kept")
    on = (F.col("source_file") == F.col("_dup_file")) & (F.col(RECORD_COLUMN) == F.col("_dup_record"))
    return _tag_duplicates(rows.join(d, on, "left"), F.col("_dup_file").isNotNull())


def leads_of(tagged: DataFrame) -> DataFrame:
    return tagged.filter(F.col(REASON).isNull()).select(*LEAD_ROW_COLUMNS)


def quarantine_of(tagged: DataFrame) -> DataFrame:
    """The quarantined rows of a tagged frame, in the quarantine table's shape (run_id unset)."""
    return tagged.filter(F.col(REASON).isNotNull()).select(
        F.lit(None).cast("string").alias("run_id"),
        "source",
        "source_file",
        "snapshot_date",
        F.col(RECORD_COLUMN).cast("long").alias("record_no"),
        F.col(REASON).alias("reason"),
        F.col(DETAIL).alias("detail"),
        "lead_id",
        RAW_COLUMN,
        F.col("_corrupt_record").alias("raw_record"),
    )
