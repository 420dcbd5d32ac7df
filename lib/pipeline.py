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
from pyspark.sql import functions as F

from leadpipe import warehouse as wh_mod
from leadpipe.canonical import ISSUES_COLUMN, map_to_canonical
from leadpipe.config import Settings, SourceConfig
from leadpipe.deliver import deliver
from leadpipe.discover import discover
from leadpipe.merge import merge_snapshot
from leadpipe.postgres import DbTarget
from leadpipe.read import SchemaDriftError, read_source
from leadpipe.report import field_quality
from leadpipe.session import RULES_PLAN_CONF, session_conf
from leadpipe.validate import REASON, leads_of, quarantine_of, tag

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

    for snapshot_date, files_by_source in found.by_date().items():
        _run_snapshot(spark, wh, sources, files_by_source, snapshot_date, run_id, latest, result, quality, settings)

    if db is not None and _table_exists(spark, wh.leads):
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


def _run_snapshot(
    spark, wh, sources, files_by_source, snapshot_date, run_id, latest, result, quality, settings
) -> None:
    """read -> canonical -> validate -> bronze/quarantine -> MERGE for one snapshot date.

    All sources of the date travel as one DataFrame, materialized once (the library rules parse
    each value once); counts come from one aggregation; each table gets one commit.
    """
    summary = result.summary
    for sid, files in files_by_source.items():
        counts = summary["sources"].setdefault(sid, _empty_counts())
        counts["files"] += len(files)
        counts["snapshots"].append(snapshot_date.isoformat())
    canonical, cfgs, errors = map_snapshot(spark, sources, files_by_source, snapshot_date)
    summary["errors"].extend(errors)
    if canonical is None:
        return
    stale = {
        c.id: f"snapshot {snapshot_date} is older than {latest[c.id]}, already merged for {c.id}"
        for c in cfgs
        if c.id in latest and snapshot_date < latest[c.id]
    }
    with session_conf(spark, RULES_PLAN_CONF):  # the cached plan is made here, once
        tagged = tag(canonical, {c.id: c.business_key for c in cfgs}, stale).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        _account(
            spark, wh, tagged, cfgs, files_by_source, snapshot_date, run_id, stale, latest, result, quality, settings
        )
    finally:
        tagged.unpersist()


def map_snapshot(
    spark: SparkSession, sources: dict[str, SourceConfig], files_by_source: dict[str, list], snapshot_date: date
) -> tuple[DataFrame | None, list[SourceConfig], list[str]]:
    """read + map to canonical for every source of one snapshot date, as one DataFrame.

    Returns (canonical rows of all readable sources or None, their configs, errors). A source
    whose files lack a column its rules read is left out with an error naming the file.
    """
    frames: list[DataFrame] = []
    cfgs: list[SourceConfig] = []
    errors: list[str] = []
    for sid, files in sorted(files_by_source.items()):
        cfg = sources[sid]
        try:
            raw, _checks = read_source(spark, files, cfg, snapshot_date)
        except SchemaDriftError as exc:
            log.error("read: %s", exc)
            errors.append(str(exc))
            continue
        frames.append(map_to_canonical(raw, cfg))
        cfgs.append(cfg)
    if not frames:
        return None, cfgs, errors
    canonical = frames[0]
    for f in frames[1:]:
        canonical = canonical.unionByName(f)
    return canonical, cfgs, errors


def _account(
    spark, wh, tagged, cfgs, files_by_source, snapshot_date, run_id, stale, latest, result, quality, settings
) -> None:
    summary = result.summary
    ids = [c.id for c in cfgs]
    per: dict[str, dict[str, int]] = {sid: {} for sid in ids}
    issues: dict[str, int] = {}
    for r in (
        tagged.groupBy("source", REASON)
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.size(ISSUES_COLUMN)).alias("issues"))
        .collect()
    ):
        per[r.source][r[REASON] or ""] = int(r.n)
        issues[r.source] = issues.get(r.source, 0) + int(r.issues or 0)
    wh_mod.write_bronze(spark, wh, tagged, ids, snapshot_date, run_id)
    read_rows = {sid: sum(per[sid].values()) for sid in ids}
    loaded = {sid: per[sid].get("", 0) for sid in ids}
    for sid in ids:
        log.info("read: %s %s: %d row(s), kept in bronze", sid, snapshot_date, read_rows[sid])
        log.info("standardize: %s %s: %d field value(s) failed a rule", sid, snapshot_date, issues.get(sid, 0))
    if quality:
        result.quality.extend(field_quality(tagged, cfgs, settings.quality_top_values))
    wh_mod.write_quarantine(spark, wh, quarantine_of(tagged), ids, snapshot_date, run_id, stale=list(stale))

    mergeable = []
    for sid in ids:
        counts = summary["sources"][sid]
        rejected = read_rows[sid] - loaded[sid]
        counts["rows_read"] += read_rows[sid]
        counts["rows_loaded"] += loaded[sid]
        counts["rows_rejected"] += rejected
        for reason, n in per[sid].items():
            if reason:
                counts["rejected_by_reason"][reason] = counts["rejected_by_reason"].get(reason, 0) + n
        log.info("validate: %s %s: %d loaded, %d quarantined %s", sid, snapshot_date, loaded[sid], rejected, per[sid])
        if sid in stale:
            log.warning("validate: %s; not merged", stale[sid])
        elif loaded[sid] == 0:
            msg = f"{sid} {snapshot_date}: no valid row; not merged (a full-refresh MERGE of nothing would remove every lead)"
            log.error("validate: %s", msg)
            summary["errors"].append(msg)
        else:
            mergeable.append(sid)
    if not mergeable:
        return
    valid = leads_of(tagged.filter(F.col("source").isin(*mergeable)))
    merged = merge_snapshot(spark, wh.leads, valid, mergeable, snapshot_date, run_id)
    log_rows = []
    for sid in mergeable:
        counts = summary["sources"][sid]
        c = merged.counts[sid]
        for k in ("new", "changed", "unchanged", "removed"):
            counts[k] += c[k]
        log_rows.append(
            {
                "source": sid,
                "snapshot_date": snapshot_date,
                "run_id": run_id,
                "leads_version": merged.version,
                "files": [f.uri for f in files_by_source[sid]],
                "rows_read": read_rows[sid],
                "rows_loaded": loaded[sid],
                "rows_rejected": read_rows[sid] - loaded[sid],
                **c,
                "merged_at": datetime.now(UTC).replace(tzinfo=None),
            }
        )
        latest[sid] = max(latest.get(sid, snapshot_date), snapshot_date)
    wh_mod.log_snapshots(spark, wh, log_rows)
