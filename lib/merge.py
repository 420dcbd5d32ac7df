"""MERGE (CDC): fold one snapshot into the Delta table of all known leads.

The ``leads`` table holds one row per lead_id, ever. One MERGE per snapshot date, covering every
source that delivered a file for that date:

- a lead_id not in the table is inserted (``new``; first_seen = snapshot_date);
- a known lead whose record_hash changed, or that had been removed and is back, is updated
  (``changed``; first_seen is kept);
- a known, active lead of a source in this snapshot that the snapshot no longer lists is
  marked removed: ``is_active = false``, ``removed_on = snapshot_date`` (``removed``; soft
  delete, the row stays);
- anything else is left alone (``unchanged``): no file is rewritten for it, thanks to deletion
  vectors.

Counts are read back from the commit's own change feed, so they say what the MERGE did.
Change Data Feed and deletion vectors are on for the table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import ISSUE_TYPE, ISSUES_COLUMN, LEAD_SCHEMA, RAW_COLUMN

log = logging.getLogger(__name__)

STATE_FIELDS = [
    T.StructField("is_active", T.BooleanType()),
    T.StructField("removed_on", T.DateType()),
    T.StructField("run_id", T.StringType()),
]
LEADS_TABLE_SCHEMA = T.StructType(
    [
        *list(LEAD_SCHEMA.fields),
        T.StructField(RAW_COLUMN, T.MapType(T.StringType(), T.StringType())),
        T.StructField(ISSUES_COLUMN, ISSUE_TYPE),
        *STATE_FIELDS,
    ]
)

TABLE_PROPERTIES = {
    "delta.enableChangeDataFeed": "true",
    "delta.enableDeletionVectors": "true",
}

# A matched lead is rewritten only when its standardized business fields changed or it is back.
CHANGED = "t.record_hash <> s.record_hash OR NOT t.is_active"


@dataclass
class MergeResult:
    version: int | None  # None: nothing changed, so Delta committed nothing
    counts: dict[str, dict[str, int]]  # source -> {new, changed, unchanged, removed}


def ensure_leads_table(spark: SparkSession, path: str) -> DeltaTable:
    """Create the leads table when absent (idempotent: concurrent creators converge)."""
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(LEADS_TABLE_SCHEMA).partitionedBy("source")
    for k, v in TABLE_PROPERTIES.items():
        builder = builder.property(k, v)
    return builder.execute()


def merge_snapshot(
    spark: SparkSession,
    path: str,
    snapshot: DataFrame,
    sources: list[str],
    snapshot_date: date,
    run_id: str,
) -> MergeResult:
    """MERGE one snapshot (valid, de-duplicated leads of ``sources``) into the table at ``path``."""
    table = ensure_leads_table(spark, path)
    src = snapshot.select(
        *[F.col(c) for c in LEAD_SCHEMA.fieldNames()],
        F.col(RAW_COLUMN),
        F.col(ISSUES_COLUMN),
    ).withColumn("run_id", F.lit(run_id))
    source_list = ", ".join(f"'{s}'" for s in sources)
    update_cols = [c for c in LEAD_SCHEMA.fieldNames() if c not in ("lead_id", "first_seen")] + [
        RAW_COLUMN,
        ISSUES_COLUMN,
    ]
    update_set = {c: f"s.`{c}`" for c in update_cols}
    update_set.update({"is_active": "true", "removed_on": "null", "run_id": "s.run_id"})
    insert_values = {c: f"s.`{c}`" for c in [*LEAD_SCHEMA.fieldNames(), RAW_COLUMN, ISSUES_COLUMN]}
    insert_values.update({"is_active": "true", "removed_on": "null", "run_id": "s.run_id"})
    metadata = json.dumps({"run_id": run_id, "snapshot_date": snapshot_date.isoformat(), "sources": sources})
    spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", metadata)
    try:
        (
            table.alias("t")
            .merge(src.alias("s"), "t.lead_id = s.lead_id")
            .whenMatchedUpdate(condition=CHANGED, set=update_set)
            .whenNotMatchedInsert(values=insert_values)
            .whenNotMatchedBySourceUpdate(
                condition=f"t.source IN ({source_list}) AND t.is_active",
                set={
                    "is_active": "false",
                    "removed_on": f"DATE'{snapshot_date.isoformat()}'",
                    "run_id": f"'{run_id}'",
                },
            )
            .execute()
        )
    finally:
        spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
    version = commit_version(spark, path, "MERGE", {"run_id": run_id, "snapshot_date": snapshot_date.isoformat()})
    counts = change_counts(spark, path, version, src, sources)
    log.info("merge: version %s of %s for %s %s: %s", version, path, snapshot_date, sources, counts)
    return MergeResult(version, counts)


def commit_version(spark: SparkSession, path: str, operation: str, metadata: dict, depth: int = 100) -> int | None:
    """The version of the newest ``operation`` commit whose userMetadata holds ``metadata``;
    None when there is none (a MERGE that changes nothing commits nothing)."""
    hist = DeltaTable.forPath(spark, path).history(depth).filter(F.col("operation") == operation)
    for row in hist.select("version", "userMetadata").orderBy(F.col("version").desc()).collect():
        if row.userMetadata:
            found = json.loads(row.userMetadata)
            if all(found.get(k) == v for k, v in metadata.items()):
                return int(row.version)
    return None


def change_feed(spark: SparkSession, path: str, first: int, last: int) -> DataFrame:
    """The table's Change Data Feed for the commits ``first..last`` (inclusive)."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", first)
        .option("endingVersion", last)
        .load(path)
    )


def change_counts(
    spark: SparkSession, path: str, version: int | None, snapshot: DataFrame, sources: list[str]
) -> dict[str, dict[str, int]]:
    """Per source: new / changed / removed from the commit's change feed; unchanged = the rest."""
    counts = {s: {"new": 0, "changed": 0, "unchanged": 0, "removed": 0} for s in sources}
    for r in snapshot.groupBy("source").count().collect():
        counts[r.source]["unchanged"] = int(r["count"])
    if version is None:
        return counts
    feed = change_feed(spark, path, version, version)
    kind = (
        F.when(F.col("_change_type") == "insert", "new")
        .when((F.col("_change_type") == "update_postimage") & ~F.col("is_active"), "removed")
        .when(F.col("_change_type") == "update_postimage", "changed")
    )
    rows = feed.select("source", kind.alias("kind")).filter(F.col("kind").isNotNull()).groupBy("source", "kind").count()
    for r in rows.collect():
        c = counts[r.source]
        c[r.kind] = int(r["count"])
        if r.kind in ("new", "changed"):
            c["unchanged"] -= int(r["count"])
    return counts
