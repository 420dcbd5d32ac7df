"""Small builders for canonical lead rows in tests."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from leadpipe.canonical import BUSINESS_COLUMNS, LEAD_COLUMNS, record_hash


def leads(spark: SparkSession, rows: list[dict], snapshot: date) -> DataFrame:
    """Canonical rows (as map_to_canonical makes them) from dicts of a few business fields."""
    full = []
    for i, r in enumerate(rows, start=1):
        row = dict.fromkeys(LEAD_COLUMNS)
        row.update(
            source=r.get("source", "s1"),
            licensing_authority="Test Authority",
            source_file=r.get("source_file", "file:/in/test.csv"),
            snapshot_date=snapshot,
            first_seen=snapshot,
        )
        row.update({k: v for k, v in r.items() if k in LEAD_COLUMNS})
        row["record_no"] = r.get("record_no", i)
        row["_corrupt_record"] = r.get("_corrupt_record")
        full.append(row)
    from leadpipe.merge import LEADS_TABLE_SCHEMA

    schema_fields = {f.name: f.dataType for f in LEADS_TABLE_SCHEMA.fields}
    ddl = ", ".join(f"`{c}` {schema_fields[c].simpleString()}" for c in LEAD_COLUMNS)
    df = spark.createDataFrame(full, f"{ddl}, record_no long, _corrupt_record string")
    df = df.withColumn("record_hash", record_hash(list(BUSINESS_COLUMNS)))
    return df.select(
        *LEAD_COLUMNS,
        F.create_map(F.lit("Name"), F.col("company")).alias("raw"),
        F.array().cast("array<struct<column:string,rule:string,raw_value:string>>").alias("dq_issues"),
        "record_no",
        "_corrupt_record",
    )
