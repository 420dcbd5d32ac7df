"""The lakehouse layout: where each Delta table lives and how the side tables are written.

``<warehouse>/leads``       every lead ever seen (the MERGE target; see merge.py)
``<warehouse>/bronze``      every row read, as the agency wrote it (a raw map), per snapshot
``<warehouse>/quarantine``  rows that are not leads, with reason and detail
``<warehouse>/_scratch``    a run's standardized rows of the snapshot it is applying (Parquet;
                            in a backfill, of every snapshot it will apply, read ahead), each
                            snapshot's deleted when it is done, the rest when the run ends, and
                            by the next run after a kill

Bronze and quarantine are derived tables: each write replaces the rows of its (source,
snapshot_date), so a re-run of a snapshot leaves one copy, and nothing reads them to decide what
to do. What was applied is recorded only in the leads table's own MERGE commits (merge.py), so a
kill between a bronze write and the MERGE cannot make a later run wrong. Bronze keeps raw values
so that rules can be improved and leads re-derived without re-reading the agencies' files; it
also keeps the rows of held snapshots.

Bronze rows carry ``extras`` besides ``raw``: the source columns the source's config does not
list, as written (NULL when the file has none). A table made by an older version gains the
columns this version writes before its next write (``add_missing_columns``: ``ALTER TABLE ...
ADD COLUMNS``, NULL in the rows already there), and the leads table the table properties this
version sets (``set_table_properties``: ``ALTER TABLE ... SET TBLPROPERTIES``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import EXTRAS_COLUMN, EXTRAS_TYPE
from leadpipe.validate import QUARANTINE_SCHEMA

log = logging.getLogger(__name__)

BRONZE_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType()),
        T.StructField("snapshot_date", T.DateType()),
        T.StructField("source_file", T.StringType()),
        T.StructField("record_no", T.LongType()),
        T.StructField("raw", T.MapType(T.StringType(), T.StringType())),
        T.StructField(EXTRAS_COLUMN, EXTRAS_TYPE),
        T.StructField("raw_record", T.StringType()),
        T.StructField("run_id", T.StringType()),
    ]
)


@dataclass(frozen=True)
class Warehouse:
    root: str

    def _path(self, name: str) -> str:
        return self.root.rstrip("/") + "/" + name

    @property
    def leads(self) -> str:
        return self._path("leads")

    @property
    def bronze(self) -> str:
        return self._path("bronze")

    @property
    def quarantine(self) -> str:
        return self._path("quarantine")

    @property
    def scratch(self) -> str:
        return self._path("_scratch")

    def scratch_of_run(self, run_id: str) -> str:
        return f"{self.scratch}/{run_id}"

    def scratch_for(self, run_id: str, snapshot_date: date) -> str:
        return f"{self.scratch_of_run(run_id)}/{snapshot_date.isoformat()}"


def delete_path(spark: SparkSession, path: str) -> bool:
    """Delete a folder (any Hadoop file system: local, s3a); True when something was deleted."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return bool(fs.exists(hpath) and fs.delete(hpath, True))


def add_missing_columns(spark: SparkSession, path: str, schema: T.StructType) -> list[str]:
    """Add to the Delta table at ``path`` the columns of ``schema`` it lacks, each after the column
    that precedes it in ``schema``, in one ``ALTER TABLE ... ADD COLUMNS`` commit (the rows already
    there read NULL). Returns the names added. Idempotent: when another writer added them first
    (the ALTER fails), the table is read again and nothing is left to add."""
    names = schema.fieldNames()

    def missing() -> list[T.StructField]:
        have = set(DeltaTable.forPath(spark, path).toDF().columns)
        return [f for f in schema.fields if f.name not in have]

    todo = missing()
    if not todo:
        return []
    clauses = []
    for f in todo:
        i = names.index(f.name)
        position = f"AFTER {_quote(names[i - 1])}" if i else "FIRST"
        clauses.append(f"{_quote(f.name)} {f.dataType.simpleString()} {position}")
    statement = f"ALTER TABLE delta.{_quote(path)} ADD COLUMNS ({', '.join(clauses)})"
    try:
        spark.sql(statement)
    except Exception:
        if missing():
            raise
        log.info("warehouse: %s: another writer added %s first", path, [f.name for f in todo])
        return []
    return [f.name for f in todo]


def set_table_properties(spark: SparkSession, path: str, properties: dict[str, str]) -> dict[str, str]:
    """Give the Delta table at ``path`` the ``properties`` whose value differs (or is absent), in one
    ``ALTER TABLE ... SET TBLPROPERTIES`` commit. Returns those set, with their new values.
    Idempotent: when another writer set them first (the ALTER fails), the table is read again and
    nothing is left to set."""

    def differing() -> dict[str, str]:
        have = DeltaTable.forPath(spark, path).detail().first().properties
        return {k: v for k, v in properties.items() if have.get(k) != v}

    todo = differing()
    if not todo:
        return {}
    pairs = ", ".join(f"{_literal(k)} = {_literal(v)}" for k, v in todo.items())
    try:
        spark.sql(f"ALTER TABLE delta.{_quote(path)} SET TBLPROPERTIES ({pairs})")
    except Exception:
        if differing():
            raise
        log.info("warehouse: %s: another writer set %s first", path, sorted(todo))
        return {}
    return todo


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _ensure(spark: SparkSession, path: str, schema: T.StructType, partition: list[str]) -> None:
    if not DeltaTable.isDeltaTable(spark, path):
        DeltaTable.createIfNotExists(spark).location(path).addColumns(schema).partitionedBy(*partition).execute()
    added = add_missing_columns(spark, path, schema)
    if added:
        log.warning("warehouse: migrated %s: added column(s) %s", path, added)


def _replace_snapshot(df: DataFrame, path: str, sources: list[str], snapshot_date: date, extra: str = "") -> None:
    in_list = ", ".join(f"'{s}'" for s in sources)
    where = f"source IN ({in_list}) AND snapshot_date = DATE'{snapshot_date.isoformat()}'" + extra
    df.write.format("delta").mode("overwrite").option("replaceWhere", where).save(path)


def write_bronze(
    spark: SparkSession, wh: Warehouse, canonical: DataFrame, sources: list[str], snapshot_date: date, run_id: str
) -> None:
    """Every row read, as the agency wrote it, from canonical rows (which carry ``raw`` and ``extras``)."""
    _ensure(spark, wh.bronze, BRONZE_SCHEMA, ["source", "snapshot_date"])
    rows = canonical.select(
        "source",
        "snapshot_date",
        "source_file",
        F.col("record_no").cast("long").alias("record_no"),
        "raw",
        EXTRAS_COLUMN,
        F.col("_corrupt_record").alias("raw_record"),
        F.lit(run_id).alias("run_id"),
    )
    _replace_snapshot(rows, wh.bronze, sources, snapshot_date)


def quarantined_snapshots(spark: SparkSession, wh: Warehouse) -> set[tuple[str, date]]:
    """The (source, snapshot_date) pairs that have rows in quarantine."""
    if not DeltaTable.isDeltaTable(spark, wh.quarantine):
        return set()
    rows = spark.read.format("delta").load(wh.quarantine).select("source", "snapshot_date").distinct().collect()
    return {(r.source, r.snapshot_date) for r in rows}


def write_quarantine(
    spark: SparkSession,
    wh: Warehouse,
    rows: DataFrame,
    sources: list[str],
    snapshot_date: date,
    run_id: str,
    stale: list[str] | tuple[str, ...] = (),
) -> None:
    """Replace the quarantined rows of (source, snapshot). A late replay of an old snapshot
    (``stale`` sources) only replaces earlier ``stale_snapshot`` rows: the reasons found when the
    snapshot was merged stay."""
    _ensure(spark, wh.quarantine, QUARANTINE_SCHEMA, ["source"])
    rows = rows.withColumn("run_id", F.lit(run_id))
    fresh = [s for s in sources if s not in stale]
    if fresh:
        mine = rows.filter(F.col("source").isin(*fresh))
        _replace_snapshot(mine, wh.quarantine, fresh, snapshot_date, " AND reason <> 'stale_snapshot'")
    if stale:
        mine = rows.filter(F.col("source").isin(*stale))
        _replace_snapshot(mine, wh.quarantine, list(stale), snapshot_date, " AND reason = 'stale_snapshot'")
