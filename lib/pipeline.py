"""The weekly job, stage by stage:

    discover -> read -> map to canonical (+ standardize) -> validate/quarantine -> MERGE (CDC)
             -> deliver -> report

Snapshots are processed oldest first; all sources that share a snapshot date go into one MERGE
commit. A source snapshot older than one already merged is never merged (it would resurrect
removed leads): its rows are quarantined as ``stale_snapshot``. A source whose files lack a
column its rules need, or whose snapshot has no valid row, is not merged either (a full-refresh
MERGE of nothing would mark every lead removed): the run then fails, naming the file.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from leadpipe import warehouse as wh_mod
from leadpipe.canonical import map_to_canonical
from leadpipe.config import Settings, SourceConfig
from leadpipe.deliver import deliver
from leadpipe.discover import discover
from leadpipe.merge import merge_snapshot
from leadpipe.postgres import DbTarget
from leadpipe.read import SchemaDriftError, read_source
from leadpipe.report import field_quality
from leadpipe.validate import quarantine_all, split

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def _empty_counts() -> dict[str, Any]:
    return {
        "files": 0,
        "rows_read": 0,
        "rows_loaded": 0,
        "rows_rejected": 0,
        "new": 0,
        "changed": 0,
        "unchanged": 0,
        "removed": 0,
        "snapshots": [],
        "rejected_by_reason": {},
    }


@dataclass
class RunResult:
    summary: dict[str, Any]
    quality: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.summary["status"] == "succeeded"


@dataclass
class _Prepared:
    source: str
    valid: DataFrame
    cached: list[DataFrame]


def run_weekly(
    spark: SparkSession,
    sources: dict[str, SourceConfig],
    input_uri: str,
    warehouse: str,
    db: DbTarget | None,
    settings: Settings,
    run_id: str | None = None,
    quality: bool = True,
) -> RunResult:
    run_id = run_id or new_run_id()
    wh = wh_mod.Warehouse(warehouse)
    summary: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "input": input_uri,
        "warehouse": warehouse,
        "sources": {},
        "delivered": 0,
        "unmatched_files": [],
        "errors": [],
    }
    result = RunResult(summary)
    found = discover(spark, input_uri, sources)
    summary["unmatched_files"] = found.unmatched
    if not found.files:
        summary["errors"].append(f"no file in {input_uri} matches a source's file_pattern")
    latest = wh_mod.latest_snapshots(spark, wh)

    by_date: dict[date, dict[str, list]] = {}
    for (snapshot_date, sid), files in found.groups().items():
        by_date.setdefault(snapshot_date, {})[sid] = files

    for snapshot_date in sorted(by_date):
        prepared: list[_Prepared] = []
        log_rows: list[dict] = []
        for sid, files in sorted(by_date[snapshot_date].items()):
            cfg = sources[sid]
            counts = summary["sources"].setdefault(sid, _empty_counts())
            counts["files"] += len(files)
            counts["snapshots"].append(snapshot_date.isoformat())
            p = _prepare(
                spark, wh, cfg, files, snapshot_date, run_id, latest, counts, summary, result, quality, settings
            )
            if p is not None:
                prepared.append(p)
                log_rows.append(
                    {
                        "source": sid,
                        "snapshot_date": snapshot_date,
                        "run_id": run_id,
                        "files": [f.uri for f in files],
                        "rows_read": counts["_read"],
                        "rows_loaded": counts["_loaded"],
                        "rows_rejected": counts["_rejected"],
                    }
                )
        if prepared:
            snapshot = prepared[0].valid
            for p in prepared[1:]:
                snapshot = snapshot.unionByName(p.valid)
            merged = merge_snapshot(spark, wh.leads, snapshot, [p.source for p in prepared], snapshot_date, run_id)
            for row in log_rows:
                c = merged.counts[row["source"]]
                for k in ("new", "changed", "unchanged", "removed"):
                    summary["sources"][row["source"]][k] += c[k]
                    row[k] = c[k]
                row["leads_version"] = merged.version
                row["merged_at"] = datetime.now(UTC).replace(tzinfo=None)
            wh_mod.log_snapshots(spark, wh, log_rows)
            for p in prepared:
                latest[p.source] = max(latest.get(p.source, snapshot_date), snapshot_date)
        for p in prepared:
            for df in p.cached:
                df.unpersist()

    for counts in summary["sources"].values():
        for k in ("_read", "_loaded", "_rejected"):
            counts.pop(k, None)

    if db is not None and (found.files or _table_exists(spark, wh.leads)) and _table_exists(spark, wh.leads):
        d = deliver(
            spark,
            wh.leads,
            db,
            run_id,
            schema=settings.postgres.schema_,
            table=settings.postgres.leads_table,
            batch_size=settings.jdbc_batch_size,
        )
        summary["delivered"] = d.delivered
        summary["delivered_versions"] = list(d.versions) if d.versions else None
    summary["status"] = "failed" if summary["errors"] else "succeeded"
    log.info("report: run %s %s; delivered %d lead(s)", run_id, summary["status"], summary["delivered"])
    return result


def _table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def _prepare(
    spark, wh, cfg, files, snapshot_date, run_id, latest, counts, summary, result, quality, settings
) -> _Prepared | None:
    """read -> bronze -> canonical -> validate/quarantine for one source snapshot."""
    sid = cfg.id
    try:
        raw, _checks = read_source(spark, files, cfg, snapshot_date)
    except SchemaDriftError as exc:
        log.error("read: %s", exc)
        summary["errors"].append(str(exc))
        return None
    raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
    rows_read = raw.count()
    wh_mod.write_bronze(spark, wh, raw, sid, snapshot_date, run_id)
    log.info("read: %s %s: %d row(s) from %d file(s), kept in bronze", sid, snapshot_date, rows_read, len(files))

    canonical = map_to_canonical(raw, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    if quality:
        result.quality.extend(field_quality(canonical, cfg, settings.quality_top_values))
    issues = canonical.selectExpr("size(dq_issues) AS n").groupBy().sum("n").first()[0] or 0
    log.info(
        "standardize: %s %s: %d row(s) mapped, %d field value(s) failed a rule", sid, snapshot_date, rows_read, issues
    )

    stale = latest.get(sid)
    if stale is not None and snapshot_date < stale:
        quarantined = quarantine_all(
            canonical,
            "stale_snapshot",
            f"snapshot {snapshot_date} is older than {stale}, already merged for {sid}",
        )
        valid = None
    else:
        valid, quarantined = split(canonical, cfg.business_key)
    quarantined = quarantined.persist(StorageLevel.MEMORY_AND_DISK)
    wh_mod.write_quarantine(spark, wh, quarantined, sid, snapshot_date, run_id)
    rejected = quarantined.count()
    for r in quarantined.groupBy("reason").count().collect():
        counts["rejected_by_reason"][r.reason] = counts["rejected_by_reason"].get(r.reason, 0) + int(r["count"])
    loaded = 0
    if valid is not None:
        valid = valid.persist(StorageLevel.MEMORY_AND_DISK)
        loaded = valid.count()
    counts["rows_read"] += rows_read
    counts["rows_loaded"] += loaded
    counts["rows_rejected"] += rejected
    counts["_read"], counts["_loaded"], counts["_rejected"] = rows_read, loaded, rejected
    log.info(
        "validate: %s %s: %d loaded, %d quarantined %s",
        sid,
        snapshot_date,
        loaded,
        rejected,
        counts["rejected_by_reason"],
    )
    if loaded + rejected != rows_read:
        raise AssertionError(f"{sid} {snapshot_date}: {rows_read} read but {loaded} loaded + {rejected} quarantined")
    cached = [raw, canonical, quarantined] + ([valid] if valid is not None else [])
    if valid is None:
        log.warning("validate: %s %s is older than the merged snapshot %s: not merged", sid, snapshot_date, stale)
        for df in cached:
            df.unpersist()
        return None
    if loaded == 0:
        msg = (
            f"{sid} {snapshot_date}: no valid row in {[f.uri for f in files]}; not merged (it would remove every lead)"
        )
        log.error("validate: %s", msg)
        summary["errors"].append(msg)
        for df in cached:
            df.unpersist()
        return None
    return _Prepared(sid, valid, cached)
