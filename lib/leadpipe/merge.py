"""MERGE (CDC): fold one source's snapshot into the Delta table of all known leads, once.

The ``leads`` table holds one row per lead_id, ever. One MERGE per (source, snapshot date):

- a lead_id not in the table is inserted (``new``; first_seen = snapshot_date);
- a known lead whose record_hash changed is updated: ``changed`` when the agency's own values
  changed (``raw_hash``), ``restandardized`` when only the rules that read them did;
- a removed lead that is listed again is reactivated (``returned``; first_seen is kept);
- an active lead of this source that the snapshot no longer lists is marked removed:
  ``is_active = false``, ``removed_on = snapshot_date`` (``removed``; soft delete);
- anything else is left alone (``unchanged``).
  A lead whose only difference is in ``extras`` (columns the source's config does not list) is
  rewritten, so that ``raw`` and ``extras`` stay its latest snapshot's, and counted unchanged.

The table is migrated in place: a column this version writes that the table lacks (a table made
by an older version) is added, before the MERGE, by ``ALTER TABLE ... ADD COLUMNS`` in a commit of
its own (no transaction id, no MERGE metadata; NULL in the existing rows), and a property the
MERGE depends on that differs (``MIGRATED_PROPERTIES``: the change feed on, deletion vectors off)
is set the same way; the log retention is only set when the table is made, so that an
operator's longer one stays. Both are idempotent: a second writer finds them there.

Deletion vectors are off: a MERGE rewrites the files holding the rows it changes instead of
marking them deleted. Measured here (BENCHMARKS.md's machine), small weekly runs were about 25 %
faster without them (8 runs of about 30 rows: 45-49 s against 59-64 s), and a 1M-row week was
as fast or faster (a no-change week's MERGE 22.9 s against 39.5 s). On a table that an older
version made with them, the deletion vectors already written stay and are honoured until their
files are rewritten (by a MERGE that changes a row there, or by OPTIMIZE where they delete over
5 % of a file's rows); ``REORG TABLE
delta.`<path>` APPLY (PURGE)`` rewrites them all at once.

The state of record travels in the same commit. Every MERGE commit carries

- a Delta transaction id: ``txnAppId = leadpipe:<source>``, ``txnVersion = yyyymmdd`` of the
  snapshot. Delta refuses, by itself, to commit a (source, snapshot) at or before one already
  committed, so a replay, a retry or a late file can never be merged over newer state, even by
  two writers racing;
- ``userMetadata``: the run id, source, snapshot date, rules version, row counts and the applied
  files with size and checksum.

"Which snapshot is each source at" is read from the table's own transaction ids
(:func:`read_applied_state`; kept in checkpoints, so it never expires), and "which files made
that snapshot" from the commits' metadata (history is kept ``LOG_RETENTION``). Nothing else is
trusted: a kill at any instant either committed the MERGE with its record, or neither.
A MERGE with a new transaction id commits even when no lead changed, so every applied snapshot
is recorded. Counts come from the commit's own operation metrics when it rewrote no known lead
(a first snapshot, only inserts and no removal), else from the diff the MERGE was given
(:class:`SnapshotDiff`) when the metrics agree with it; where they differ, they are read back
from the commit's change feed (``last_change``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import (
    EXTRAS_COLUMN,
    ISSUE_TYPE,
    ISSUES_COLUMN,
    LEAD_SCHEMA,
    RAW_COLUMN,
    RAW_HASH_COLUMN,
    RULES_VERSION_COLUMN,
)
from leadpipe.expressions import date_value
from leadpipe.warehouse import add_missing_columns, set_table_properties

log = logging.getLogger(__name__)

STATE_FIELDS = [
    T.StructField("is_active", T.BooleanType()),
    T.StructField("removed_on", T.DateType()),
    T.StructField("run_id", T.StringType()),
    T.StructField("last_change", T.StringType()),
]
LEADS_TABLE_SCHEMA = T.StructType(
    [
        *list(LEAD_SCHEMA.fields),
        T.StructField(RAW_COLUMN, T.MapType(T.StringType(), T.StringType())),
        T.StructField(ISSUES_COLUMN, ISSUE_TYPE),
        T.StructField(RAW_HASH_COLUMN, T.StringType()),
        T.StructField(RULES_VERSION_COLUMN, T.StringType()),
        *STATE_FIELDS,
    ]
)
SOURCE_COLUMNS = [*LEAD_SCHEMA.fieldNames(), RAW_COLUMN, ISSUES_COLUMN, RAW_HASH_COLUMN, RULES_VERSION_COLUMN]

#: Commit history (the applied files of every snapshot) is kept ten years; the per-source
#: transaction ids are kept for ever (they live in checkpoints).
LOG_RETENTION = "interval 3650 days"
TABLE_PROPERTIES = {
    "delta.enableChangeDataFeed": "true",
    "delta.enableDeletionVectors": "false",  # see the module doc
    "delta.logRetentionDuration": LOG_RETENTION,
}

#: set on an existing table when they differ (module doc); the rest only when it is made
MIGRATED_PROPERTIES = {k: TABLE_PROPERTIES[k] for k in ("delta.enableChangeDataFeed", "delta.enableDeletionVectors")}

APP_ID_PREFIX = "leadpipe:"
COUNT_KINDS = ("new", "changed", "returned", "restandardized", "removed", "unchanged")

# A matched lead is rewritten when its standardized business fields changed, it is back, or the
# agency's raw values, the rules that read them or its extras changed (so raw, extras, raw_hash and
# rules_version on every lead stay those of its latest snapshot). The last kind, ``refreshed``, is
# no change to report: it is counted as unchanged.
CHANGED = (
    f"t.record_hash <> s.record_hash OR NOT t.is_active OR t.{RAW_HASH_COLUMN} <> s.{RAW_HASH_COLUMN} "
    f"OR t.{RULES_VERSION_COLUMN} <> s.{RULES_VERSION_COLUMN} "
    # maps have no equality in Spark SQL: their sorted entries do (NULL: the file had no extra column)
    f"OR NOT (array_sort(map_entries(t.{EXTRAS_COLUMN})) <=> array_sort(map_entries(s.{EXTRAS_COLUMN})))"
)
LAST_CHANGE = (
    "CASE WHEN NOT t.is_active THEN 'returned' WHEN t.record_hash = s.record_hash THEN 'refreshed' "
    f"WHEN t.{RAW_HASH_COLUMN} = s.{RAW_HASH_COLUMN} THEN 'restandardized' ELSE 'changed' END"
)


#: Delta's optimistic-concurrency conflicts: nothing was committed, the same transaction may retry.
CONFLICT = re.compile(r"\b(?:io\.delta\.exceptions\.Concurrent\w+Exception|DELTA_CONCURRENT_\w+)")


class DeltaConflictError(RuntimeError):
    """Another writer kept winning the Delta commit race; nothing of this MERGE was committed."""


def txn_version(snapshot_date: date) -> int:
    """The Delta transaction version of a snapshot: ``yyyymmdd`` (ordered like the dates)."""
    return snapshot_date.year * 10000 + snapshot_date.month * 100 + snapshot_date.day


def txn_date(version: int) -> date:
    return date(version // 10000, version // 100 % 100, version % 100)


@dataclass(frozen=True)
class AppliedSnapshot:
    """What one MERGE commit says it applied (its userMetadata)."""

    source: str
    snapshot_date: date
    version: int
    run_id: str
    rules_version: str | None
    files: tuple[tuple[str, int, str], ...]  # (name, size, checksum)
    rows_read: int | None = None


@dataclass
class AppliedState:
    """The leads table's own record of what it holds: per source, the newest snapshot applied
    (Delta transaction ids) and the commits that applied snapshots (commit metadata)."""

    latest: dict[str, date] = field(default_factory=dict)
    applied: dict[tuple[str, date], AppliedSnapshot] = field(default_factory=dict)

    def previous(self, source: str) -> AppliedSnapshot | None:
        """The commit of the newest applied snapshot of ``source`` (None when unknown)."""
        d = self.latest.get(source)
        return self.applied.get((source, d)) if d else None


@dataclass
class MergeResult:
    version: int | None  # None: Delta found this (source, snapshot) already committed
    counts: dict[str, int]  # COUNT_KINDS -> rows

    @property
    def skipped(self) -> bool:
        return self.version is None


def ensure_leads_table(spark: SparkSession, path: str) -> DeltaTable:
    """Create the leads table when absent (idempotent: concurrent creators converge); add to an
    existing one the columns this version writes that it lacks and set the table properties it
    sets (see the module doc), then check."""
    if DeltaTable.isDeltaTable(spark, path):
        added = add_missing_columns(spark, path, LEADS_TABLE_SCHEMA)
        if added:
            log.warning("merge: migrated %s: added column(s) %s", path, added)
        changed = set_table_properties(spark, path, MIGRATED_PROPERTIES)
        if changed:
            log.warning("merge: migrated %s: set table properties %s", path, changed)
        table = DeltaTable.forPath(spark, path)
        _check_columns(table, path)
        return table
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(LEADS_TABLE_SCHEMA).partitionedBy("source")
    for k, v in TABLE_PROPERTIES.items():
        builder = builder.property(k, v)
    table = builder.execute()
    _check_columns(table, path)
    return table


def _check_columns(table: DeltaTable, path: str) -> None:
    have = set(table.toDF().columns)
    missing = [c for c in LEADS_TABLE_SCHEMA.fieldNames() if c not in have]
    if missing:
        raise RuntimeError(
            f"{path}: the leads table lacks column(s) {missing} after its migration: was it changed by "
            "another program meanwhile?"
        )


def table_exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def _latest_snapshot(spark: SparkSession, path: str):
    """The table's newest Delta snapshot (a JVM object). Listing the log only: no Spark job."""
    jvm = spark.sparkContext._jvm
    none = jvm.scala.Option.empty()
    return jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path).update(False, none, none)


def table_id_and_version(spark: SparkSession, path: str) -> tuple[str, int]:
    """(the Delta table's id, its newest version), from the log's newest commit and checksum,
    without the state reconstruction that ``DESCRIBE DETAIL`` or ``history()`` start."""
    snap = _latest_snapshot(spark, path)
    return str(snap.metadata().id()), int(snap.version())


def transaction_versions(spark: SparkSession, path: str) -> dict[str, int]:
    """The table's Delta transaction ids (appId -> version) at its newest version.

    Read from the version's checksum file (``.crc``), where Delta writes every transaction id
    of the table at each commit while they are few (``setTransactionsInCrc.maxAllowed``);
    otherwise, or when the checksum is missing, from Delta's state reconstruction (a Spark job
    over the whole log: 8-15 s of a run that has nothing else to do)."""
    snap = _latest_snapshot(spark, path)
    checksum = snap.checksumOpt()
    in_crc = checksum.get().setTransactions() if checksum.isDefined() else None
    txns = in_crc.get() if in_crc is not None and in_crc.isDefined() else snap.setTransactions()
    out = {}
    for i in range(txns.size()):
        t = txns.apply(i)
        out[t.appId()] = int(t.version())
    return out


def read_applied_state(spark: SparkSession, path: str) -> AppliedState:
    """Per source, the newest applied snapshot, and the metadata of every applied snapshot's
    commit still in the table's history. Empty when the table does not exist yet."""
    state = AppliedState()
    if not table_exists(spark, path):
        return state
    for app_id, version in transaction_versions(spark, path).items():
        if app_id.startswith(APP_ID_PREFIX):
            state.latest[app_id.removeprefix(APP_ID_PREFIX)] = txn_date(version)
    hist = DeltaTable.forPath(spark, path).history().filter(F.col("operation") == "MERGE")
    for row in hist.select("version", "userMetadata").orderBy("version").collect():
        meta = _metadata(row.userMetadata)
        if meta is None:
            continue
        d = date.fromisoformat(meta["snapshot_date"])
        state.applied[(meta["source"], d)] = AppliedSnapshot(
            source=meta["source"],
            snapshot_date=d,
            version=int(row.version),
            run_id=meta.get("run_id", ""),
            rules_version=meta.get("rules_version"),
            files=tuple((f["name"], int(f["size"]), f["checksum"]) for f in meta.get("files", [])),
            rows_read=meta.get("rows_read"),
        )
    return state


def _metadata(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and meta.get("leadpipe") == 1 and "source" in meta else None


#: The column that marks a removal in the MERGE's source (:func:`diff_rows`).
REMOVED_MARK = "__lp_removed"
#: The column of :func:`snapshot_diff` that says what the MERGE will do to the lead: ``new``,
#: ``removed``, or the ``last_change`` it will write (``returned``, ``changed``,
#: ``restandardized``, ``refreshed``).
DIFF_KIND = "__lp_kind"
DIFF_KINDS = ("new", "removed", "returned", "changed", "restandardized", "refreshed")
#: Diffs up to this many leads are broadcast into the MERGE: the snapshot's rows are then not shuffled.
BROADCAST_DIFF_ROWS = 500_000


def snapshot_diff(target: DataFrame, snapshot: DataFrame, source: str) -> DataFrame:
    """The leads a weekly MERGE of ``snapshot`` acts on, found before it runs: ``lead_id``,
    ``REMOVED_MARK`` (true: an active lead of ``source`` that the snapshot no longer lists; false:
    a lead the table lacks, or a listed lead that meets the MERGE's own ``CHANGED`` condition)
    and ``DIFF_KIND`` (what the MERGE will do to it: ``new``, ``removed`` or its ``LAST_CHANGE``).

    A full outer join of narrow columns only (lead_id, the two hashes, the rules version, extras,
    is_active) of the snapshot and of the source's leads in ``target``.
    """
    keys = ["lead_id", "record_hash", RAW_HASH_COLUMN, RULES_VERSION_COLUMN, EXTRAS_COLUMN]
    known = target.filter(F.col("source") == source).select(*keys, "is_active")
    return (
        snapshot.select(*keys)
        .alias("s")
        .join(known.alias("t"), F.col("s.lead_id") == F.col("t.lead_id"), "full_outer")
        .where(
            F.col("t.lead_id").isNull()
            | (F.col("s.lead_id").isNull() & F.col("t.is_active"))
            | (F.col("s.lead_id").isNotNull() & F.expr(CHANGED))
        )
        .select(
            F.coalesce(F.col("s.lead_id"), F.col("t.lead_id")).alias("lead_id"),
            F.col("s.lead_id").isNull().alias(REMOVED_MARK),
            F.when(F.col("t.lead_id").isNull(), F.lit("new"))
            .when(F.col("s.lead_id").isNull(), F.lit("removed"))
            .otherwise(F.expr(LAST_CHANGE))
            .alias(DIFF_KIND),
        )
    )


@dataclass
class SnapshotDiff:
    """:func:`snapshot_diff` of one snapshot against one version of the table, cached, with how
    many leads of each ``DIFF_KINDS`` it holds (one Spark job computes both)."""

    rows: DataFrame
    counts: dict[str, int]
    version: int  # the table version it was read from (a newer one may have been: then it is redone)

    @property
    def size(self) -> int:
        return sum(self.counts.values())

    def active_before(self, listed: int) -> int:
        """Active leads of the source in the table, given ``listed``: the distinct leads of the
        snapshot. Each listed lead is new, inactive (``returned``) or active; each active lead is
        listed or ``removed``."""
        return listed - self.counts["new"] - self.counts["returned"] + self.counts["removed"]

    def release(self) -> None:
        self.rows.unpersist()


def diff_snapshot(spark: SparkSession, path: str, snapshot: DataFrame, source: str) -> SnapshotDiff:
    """:func:`snapshot_diff` of ``snapshot`` (valid, de-duplicated leads of ``source``) against the
    newest version of the table at ``path`` (which must exist), migrated first when it lacks a
    column this version writes (:func:`ensure_leads_table`: the diff reads ``extras``, the hashes
    and the rules version). The caller releases it."""
    table = ensure_leads_table(spark, path)
    version = table_id_and_version(spark, path)[1]
    rows = snapshot_diff(table.toDF(), snapshot, source).persist()
    try:
        counts = dict.fromkeys(DIFF_KINDS, 0)
        for r in rows.groupBy(DIFF_KIND).count().collect():
            counts[r[DIFF_KIND]] = int(r["count"])
    except BaseException:
        rows.unpersist()
        raise
    return SnapshotDiff(rows, counts, version)


def diff_rows(snapshot: DataFrame, diff: DataFrame, broadcast: bool) -> DataFrame:
    """The MERGE's source: the rows of ``snapshot`` the diff names (new or changed), and one row
    per removal with only ``lead_id`` and ``REMOVED_MARK`` set. ``broadcast``: the diff is small
    enough to send to every task, so the snapshot's wide rows are filtered where they are read,
    never shuffled."""
    listed = diff.filter(~F.col(REMOVED_MARK)).select("lead_id")
    listed = F.broadcast(listed) if broadcast else listed
    rows = snapshot.join(listed, "lead_id", "left_semi").withColumn(REMOVED_MARK, F.lit(False))
    return rows.unionByName(diff.filter(F.col(REMOVED_MARK)).select("lead_id", REMOVED_MARK), allowMissingColumns=True)


def merge_source_snapshot(
    spark: SparkSession,
    path: str,
    snapshot: DataFrame,
    source: str,
    snapshot_date: date,
    run_id: str,
    metadata: dict,
    attempts: int = 3,
    first: bool = False,
    diff: SnapshotDiff | None = None,
) -> MergeResult:
    """MERGE one source's snapshot (valid, de-duplicated leads) into the table at ``path``.

    ``first``: no snapshot of the source was ever applied, so the table holds no lead of it:
    the MERGE has its insert clause only, which Delta runs as an anti-join and an append (no
    update clause to evaluate, no change-feed files to write; a first week's million leads
    commit in a fraction of the time). It is the same MERGE commit with the same transaction id
    and record; a lead that is there after all (it cannot be, while the run holds the lock) is
    left as it is rather than inserted twice.

    Otherwise the MERGE is given only what it acts on (:func:`snapshot_diff`, :func:`diff_rows`):
    the same inserts, updates and removals as a MERGE of the whole snapshot with a
    not-matched-by-source clause, but Delta joins a few percent of the rows instead of the whole
    snapshot twice (once to find the files to touch, once to rewrite them). ``diff``: the one the
    caller computed for its hold check (:func:`diff_snapshot` of the same rows; the caller releases
    it), used when the table is still at the version it was read from; otherwise, and on every
    retry, the diff is read from the table's newest version when the attempt starts. The run's
    lock keeps it the version the MERGE reads (no other run writes the table meanwhile).

    ``metadata`` (files, counts, rules version) goes into the commit with the run id, source and
    date. Returns ``version=None`` when the table already holds this or a newer snapshot of the
    source (Delta's transaction id check: nothing committed). A lost commit race is retried up
    to ``attempts`` times (each try is the same idempotent transaction), then
    :class:`DeltaConflictError`.
    """
    table = ensure_leads_table(spark, path)
    src = snapshot.select(*SOURCE_COLUMNS).withColumn("run_id", F.lit(run_id))
    update_cols = [c for c in SOURCE_COLUMNS if c not in ("lead_id", "first_seen")]
    update_set = {c: f"s.`{c}`" for c in update_cols}
    update_set.update({"is_active": "true", "removed_on": "null", "run_id": "s.run_id", "last_change": LAST_CHANGE})
    insert_values = {c: f"s.`{c}`" for c in SOURCE_COLUMNS}
    insert_values.update({"is_active": "true", "removed_on": "null", "run_id": "s.run_id", "last_change": "'new'"})
    commit_meta = {
        "leadpipe": 1,
        "run_id": run_id,
        "source": source,
        "snapshot_date": snapshot_date.isoformat(),
        **metadata,
    }
    conf = {
        "spark.databricks.delta.write.txnAppId": APP_ID_PREFIX + source,
        "spark.databricks.delta.write.txnVersion": str(txn_version(snapshot_date)),
        "spark.databricks.delta.commitInfo.userMetadata": json.dumps(commit_meta, default=str),
    }
    on = f"t.source = '{source}' AND t.lead_id = s.lead_id"
    removal = {
        "is_active": "false",
        "removed_on": date_value(snapshot_date, F.col("t.source")),  # compiled once
        "run_id": f"'{run_id}'",
        "last_change": "'removed'",
    }
    used: SnapshotDiff | None = None
    for attempt in range(1, attempts + 1):
        for k, v in conf.items():
            spark.conf.set(k, v)
        try:
            if first:
                merge = table.alias("t").merge(src.alias("s"), on)
                metrics = merge.whenNotMatchedInsert(values=insert_values).execute().collect()
                break
            fresh = diff is None or attempt > 1 or diff.version != table_id_and_version(spark, path)[1]
            used = diff_snapshot(spark, path, src, source) if fresh else diff
            try:
                rows = diff_rows(src, used.rows, broadcast=used.size <= BROADCAST_DIFF_ROWS)
                metrics = (
                    table.alias("t")
                    .merge(rows.alias("s"), on)
                    .whenMatchedUpdate(condition=f"s.{REMOVED_MARK} AND t.is_active", set=removal)
                    .whenMatchedUpdate(condition=f"NOT s.{REMOVED_MARK} AND ({CHANGED})", set=update_set)
                    .whenNotMatchedInsert(condition=f"NOT s.{REMOVED_MARK}", values=insert_values)
                    .execute()
                    .collect()
                )
            finally:
                if fresh:
                    used.release()
            break
        except Exception as exc:  # py4j wraps Delta's io.delta.exceptions.Concurrent*Exception
            text = str(exc)
            if not CONFLICT.search(text):
                raise
            if attempt == attempts:
                raise DeltaConflictError(
                    f"MERGE of {source} {snapshot_date} into {path} lost the commit race {attempts} time(s) to "
                    f"another writer; nothing was committed. Is another job writing this table? ({text[:200]})"
                ) from None
            log.warning("merge: %s %s lost a commit race (attempt %d); retrying", source, snapshot_date, attempt)
            time.sleep(min(2**attempt, 10))
        finally:
            for k in conf:
                spark.conf.unset(k)
    if not metrics:  # Delta skipped the MERGE: its transaction id is already in the table
        log.info("merge: %s %s is already in %s; nothing committed", source, snapshot_date, path)
        return MergeResult(None, dict.fromkeys(COUNT_KINDS, 0))
    version, operation = _commit_of(table, source, snapshot_date, run_id)
    inserted = int(operation.get("numTargetRowsInserted", -1))
    updated = int(operation.get("numTargetRowsMatchedUpdated", -1))
    if updated == 0 and inserted >= 0:  # nothing known was rewritten: the commit's own metrics say
        # it all (a first week's million inserts need no diff and no change-feed read)
        counts = dict.fromkeys(COUNT_KINDS, 0)
        counts["new"] = inserted
        counts["removed"] = int(operation.get("numTargetRowsNotMatchedBySourceUpdated", 0))
    elif used is not None and (inserted, updated) == (used.counts["new"], used.size - used.counts["new"]):
        counts = {k: used.counts.get(k, 0) for k in COUNT_KINDS}  # the diff the commit applied, row for row
    else:  # the commit did other than its diff said (it cannot, under the run's lock): read what it did
        if used is not None:
            log.warning(
                "merge: %s %s: commit metrics (%d inserted, %d updated) differ from its diff %s; "
                "counting its change feed",
                source,
                snapshot_date,
                inserted,
                updated,
                used.counts,
            )
        counts = change_counts(spark, path, version)
    counts["unchanged"] = int(metadata.get("rows_loaded", 0)) - sum(
        counts[k] for k in ("new", "changed", "returned", "restandardized")
    )
    log.info("merge: version %d of %s for %s %s: %s", version, path, source, snapshot_date, counts)
    return MergeResult(version, counts)


def _commit_of(table: DeltaTable, source: str, snapshot_date: date, run_id: str) -> tuple[int, dict[str, str]]:
    """The version and operation metrics of the MERGE commit just made (the newest with its metadata)."""
    hist = table.history(20).filter(F.col("operation") == "MERGE")
    for row in hist.select("version", "userMetadata", "operationMetrics").collect():  # newest first
        meta = _metadata(row.userMetadata) or {}
        if (meta.get("source"), meta.get("snapshot_date"), meta.get("run_id")) == (
            source,
            snapshot_date.isoformat(),
            run_id,
        ):
            return int(row.version), dict(row.operationMetrics or {})
    raise RuntimeError(f"MERGE of {source} {snapshot_date} ran but its commit is not in the table's history")


def change_feed(spark: SparkSession, path: str, first: int, last: int) -> DataFrame:
    """The table's Change Data Feed for the commits ``first..last`` (inclusive)."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", first)
        .option("endingVersion", last)
        .load(path)
    )


def change_counts(spark: SparkSession, path: str, version: int) -> dict[str, int]:
    """new / changed / returned / restandardized / removed rows of one commit (its change feed)."""
    counts = dict.fromkeys(COUNT_KINDS, 0)
    feed = change_feed(spark, path, version, version).filter(F.col("_change_type").isin("insert", "update_postimage"))
    for r in feed.groupBy("last_change").count().collect():
        if r.last_change in counts:  # "refreshed" rows are no change: they stay in "unchanged"
            counts[r.last_change] = int(r["count"])
    return counts
