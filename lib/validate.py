"""Validate / quarantine: split canonical rows into leads and quarantined rows, each with a reason.

Nothing is dropped: every row read ends up in exactly one of the two outputs.

Reasons:
- ``malformed_record``: the CSV record did not parse (fewer fields than the header, or the
  file ended inside an open quote); its raw text is kept.
- ``missing_business_key``: the business key is empty after standardization, so the row
  cannot have a stable lead_id.
- ``duplicate_business_key``: another row of the same snapshot has the same lead_id. The row
  with the most filled business fields is kept (ties: the earliest record); the others are
  quarantined naming the kept record. A MERGE never sees duplicate keys.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import BUSINESS_COLUMNS, ISSUES_COLUMN, LEAD_COLUMNS, RAW_COLUMN, RECORD_COLUMN

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

LEAD_ROW_COLUMNS = [*LEAD_COLUMNS, RAW_COLUMN, ISSUES_COLUMN, RECORD_COLUMN]


def _filled_count() -> Column:
    total = F.lit(0)
    for c in BUSINESS_COLUMNS:
        total = total + F.when(F.col(c).isNotNull(), 1).otherwise(0)
    return total


def split(canonical: DataFrame, business_key: list[str]) -> tuple[DataFrame, DataFrame]:
    """(valid leads, quarantined rows without run_id). Pure: no I/O."""
    reason = F.when(F.col("_corrupt_record").isNotNull(), F.lit("malformed_record")).when(
        F.col("lead_id").isNull(), F.lit("missing_business_key")
    )
    key_list = ", ".join(business_key)
    detail = F.when(
        F.col("_corrupt_record").isNotNull(),
        F.lit("record does not parse: fewer fields than the header, or the file ends inside an open quote"),
    ).when(F.col("lead_id").isNull(), F.lit(f"business key ({key_list}) is empty after standardization"))
    tagged = canonical.withColumn("_reason", reason).withColumn("_detail", detail)

    candidates = tagged.filter(F.col("_reason").isNull())
    w = Window.partitionBy("lead_id").orderBy(_filled_count().desc(), F.col("source_file"), F.col(RECORD_COLUMN))
    ranked = candidates.withColumn("_rank", F.row_number().over(w)).withColumn(
        "_kept_record",
        F.first(F.concat(F.col("source_file"), F.lit(" record "), F.col(RECORD_COLUMN).cast("string"))).over(w),
    )
    valid = ranked.filter(F.col("_rank") == 1).select(*LEAD_ROW_COLUMNS)
    duplicates = ranked.filter(F.col("_rank") > 1).select(
        "*",
        F.lit("duplicate_business_key").alias("_reason2"),
        F.concat(
            F.lit("lead_id "), F.col("lead_id"), F.lit(" also at "), F.col("_kept_record"), F.lit(" (kept)")
        ).alias("_detail2"),
    )
    bad = tagged.filter(F.col("_reason").isNotNull())
    quarantine = _quarantine_rows(bad, "_reason", "_detail").unionByName(
        _quarantine_rows(duplicates, "_reason2", "_detail2")
    )
    return valid, quarantine


def _quarantine_rows(df: DataFrame, reason: str, detail: str) -> DataFrame:
    return df.select(
        F.lit(None).cast("string").alias("run_id"),
        "source",
        "source_file",
        "snapshot_date",
        F.col(RECORD_COLUMN).cast("long").alias("record_no"),
        F.col(reason).alias("reason"),
        F.col(detail).alias("detail"),
        "lead_id",
        RAW_COLUMN,
        F.col("_corrupt_record").alias("raw_record"),
    )


def quarantine_all(canonical: DataFrame, reason: str, detail: str) -> DataFrame:
    """Every row of ``canonical`` quarantined for one reason (for example a stale snapshot)."""
    return _quarantine_rows(
        canonical.withColumn("_r", F.lit(reason)).withColumn("_d", F.lit(detail)),
        "_r",
        "_d",
    )
