"""Report: after delivery, the run's new-leads report and the dashboard views, from PostgreSQL.

What sales sees is read back from where sales' data lives: the report's leads are the rows of
PostgreSQL ``leads`` that this run delivered (``run_id``), its history is ``pipeline_runs``; so
the page and the CSV show exactly what reached the database. The files go to
``<reports>/<run date>/<run id>/`` (``index.html``, ``new_leads.csv``; weekly_report.py renders
them), with a relative link to the previous run's report; the path is recorded in the run's
``pipeline_runs`` row and the summary.

The views (created with the tables, replaced when their definition changes) answer:

``new_leads_latest_run``    the leads delivered by the most recent run that delivered any
``leads_by_state_and_type`` leads per state and facility type: all delivered, delivered in the
                            last 7 days, the newest first_seen
``pipeline_run_history``    one row per run and source: status, timings, rows read / loaded /
                            rejected, new / changed / removed, leads delivered by the run
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from psycopg import sql

from leadpipe.postgres import DbTarget
from leadpipe.runs import RUNS_TABLE, normalize_location
from leadpipe.state import RunSummary
from leadpipe.weekly_report import CSV_COLUMNS, ReportFiles, ReportInput, write_report

log = logging.getLogger(__name__)

HISTORY_RUNS = 12  # runs in the report's chart, this one included

VIEWS = {
    "new_leads_latest_run": (
        "SELECT l.* FROM {leads} l WHERE l.run_id = ("
        " SELECT r.run_id FROM {runs} r WHERE r.delivered > 0 ORDER BY r.started_at DESC LIMIT 1)"
    ),
    "leads_by_state_and_type": (
        "SELECT state, facility_type, count(*) AS leads,"
        " count(*) FILTER (WHERE delivered_at >= now() - interval '7 days') AS delivered_last_7_days,"
        " max(first_seen) AS newest_first_seen"
        " FROM {leads} GROUP BY state, facility_type"
    ),
    "pipeline_run_history": (
        "SELECT r.run_id, r.warehouse, r.status, r.started_at, r.finished_at,"
        " r.finished_at - r.started_at AS duration, r.delivered AS run_delivered, s.key AS source,"
        " (s.value->>'rows_read')::bigint AS rows_read, (s.value->>'rows_loaded')::bigint AS rows_loaded,"
        " (s.value->>'rows_rejected')::bigint AS rows_rejected, (s.value->>'new')::bigint AS new,"
        " (s.value->>'changed')::bigint AS changed, (s.value->>'removed')::bigint AS removed, r.report"
        " FROM {runs} r LEFT JOIN LATERAL jsonb_each(coalesce(r.sources, '{{}}'::jsonb)) s ON true"
    ),
}


def ensure_views(conn, schema: str, table: str) -> None:
    """Create or replace the dashboard views (call under the DDL lock, after the tables), in one
    transaction: a dashboard never finds a view missing. ``CREATE OR REPLACE`` keeps views that
    users built on them; only a definition whose columns changed is dropped and made again."""
    names = {"leads": sql.Identifier(schema, table), "runs": sql.Identifier(schema, RUNS_TABLE)}
    with conn.transaction():
        for view, body in VIEWS.items():
            name = sql.Identifier(schema, view)
            create = sql.SQL("CREATE OR REPLACE VIEW {} AS " + body).format(name, **names)
            try:
                with conn.transaction():  # a savepoint
                    conn.execute(create)
            except Exception:  # the columns changed: OR REPLACE cannot, so drop and create
                conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(name))
                conn.execute(sql.SQL("CREATE VIEW {} AS " + body).format(name, **names))


def default_reports_location(warehouse: str) -> str:
    """``reports/`` beside the warehouse (``.local/warehouse`` -> ``.local/reports``)."""
    return normalize_location(warehouse).rsplit("/", 1)[0] + "/reports"


def publish(db: DbTarget, schema: str, table: str, state: RunSummary, reports: str) -> ReportFiles:
    """Write this run's report from what PostgreSQL holds; record its path on the run's row."""
    if "://" in reports:
        raise ValueError(f"reports location {reports!r}: only a local folder is supported so far")
    runs = sql.Identifier(schema, RUNS_TABLE)
    wh = normalize_location(state.warehouse)
    with db.connect() as conn:
        cur = conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE run_id = %s ORDER BY source, lead_id").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in CSV_COLUMNS), sql.Identifier(schema, table)
            ),
            (state.run_id,),
        )
        names = [d.name for d in cur.description]
        leads = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        past = conn.execute(
            sql.SQL(
                "SELECT run_id, finished_at, status, sources, report FROM {} WHERE warehouse = %s AND run_id <> %s "
                "AND finished_at IS NOT NULL ORDER BY started_at DESC LIMIT %s"
            ).format(runs),
            (wh, state.run_id, HISTORY_RUNS - 1),
        ).fetchall()
    history = [
        {"run_id": r[0], "finished_at": r[1].isoformat(timespec="seconds"), "status": r[2], "sources": r[3] or {}}
        for r in reversed(past)
    ]
    summary = state.to_dict()
    history.append({k: summary[k] for k in ("run_id", "finished_at", "status", "sources")})
    folder = Path(reports) / (state.finished_at or state.started_at)[:10] / state.run_id
    previous = next((r[4] for r in past if r[4]), None)
    link = os.path.relpath(previous, folder) if previous else None
    files = write_report(folder, ReportInput(run=summary, new_leads=leads, history=history, previous_report=link))
    with db.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET report = %s WHERE run_id = %s").format(runs), (str(files.html), state.run_id)
        )
    log.info("report: %d new lead(s) of run %s in %s", len(leads), state.run_id, files.html)
    return files


def report_fields(files: ReportFiles) -> dict[str, str]:
    return {"html": str(files.html), "csv": str(files.csv)}
