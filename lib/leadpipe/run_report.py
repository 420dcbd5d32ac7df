"""Report: after delivery, the run's new-leads report and the dashboard views, from PostgreSQL.

What sales sees is read back from where sales' data lives: the report's leads are the rows of
PostgreSQL ``leads`` that this run delivered (``run_id``), its history is ``pipeline_runs``; so
the page and the CSV show exactly what reached the database. The files go to
``<reports>/<run date>/<run id>/`` (``index.html``, ``new_leads.csv``; weekly_report.py renders
them), with a relative link to the previous run's report; the path is recorded in the run's
``pipeline_runs`` row and the summary.

However many leads a run delivered, ``publish`` holds at most ``REPORT_TABLE_ROWS`` of them in
memory (its ``table_rows``): PostgreSQL computes the page's counts, crosstab, fill rates and
authorities (``read_new_leads``: one scan of the run's rows, grouped by source, state and
facility type, then rolled up with grouping sets), the page's table holds the first
``REPORT_TABLE_ROWS`` leads by lower-cased company then lead_id, and the CSV is streamed
row by row from ``COPY ... TO STDOUT`` into the file (``copy_csv``). All of it is read in one
REPEATABLE READ snapshot, so the page's counts and the CSV's rows agree.

``new_leads.csv`` is what Python's ``csv`` module writes (UTF-8, a header row, ``\r\n`` line
ends, quotes only where needed): one row per new lead ordered by source and lead_id, the
contact columns sales uses (``CSV_COLUMNS``) in that order; text trimmed, missing or blank values
are empty cells, dates ISO ``yyyy-mm-dd``.

The views (created with the tables, replaced when their definition changes) answer:

``new_leads_latest_run``    the leads delivered by the most recent run that delivered any
``leads_by_state_and_type`` leads per state and facility type: all delivered, delivered in the
                            last 7 days, the newest first_seen
``pipeline_run_history``    one row per run and source: status, timings, rows read / loaded /
                            rejected, new / changed / removed, leads delivered by the run
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql
from pyspark.sql import types as T

from leadpipe.canonical import LEAD_SCHEMA
from leadpipe.postgres import DbTarget
from leadpipe.runs import RUNS_TABLE, normalize_location
from leadpipe.state import RunSummary
from leadpipe.weekly_report import (
    CONTACT_FIELDS,
    CSV_COLUMNS,
    REPORT_TABLE_ROWS,
    UNKNOWN,
    NewLeads,
    ReportFiles,
    ReportInput,
    write_report,
)

log = logging.getLogger(__name__)

HISTORY_RUNS = 12  # runs in the report's chart, this one included
#: The columns the page's table shows (weekly_report's lead rows read these).
TABLE_COLUMNS = CSV_COLUMNS
#: What Python's ``str.strip()`` removes: the report trims values as the page always has.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_COLUMN_TYPES = {f.name: f.dataType for f in LEAD_SCHEMA.fields}

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


def publish(
    db: DbTarget, schema: str, table: str, state: RunSummary, reports: str, table_rows: int = REPORT_TABLE_ROWS
) -> ReportFiles:
    """Write this run's report from what PostgreSQL holds; record its path on the run's row.

    The page's table shows at most ``table_rows`` leads; the CSV has every one."""
    if "://" in reports:
        raise ValueError(f"reports location {reports!r}: only a local folder is supported so far")
    runs = sql.Identifier(schema, RUNS_TABLE)
    wh = normalize_location(state.warehouse)
    summary = state.to_dict()
    folder = Path(reports) / (state.finished_at or state.started_at)[:10] / state.run_id
    with db.connect() as conn:
        # one snapshot for the counts, the table and the CSV
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        new_leads = read_new_leads(conn, schema, table, state.run_id, table_rows)
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
        history.append({k: summary[k] for k in ("run_id", "finished_at", "status", "sources")})
        previous = next((r[4] for r in past if r[4]), None)
        link = os.path.relpath(previous, folder) if previous else None
        inp = ReportInput(run=summary, new_leads=new_leads, history=history, previous_report=link)
        files = write_report(folder, inp, functools.partial(copy_csv, conn, schema, table, state.run_id))
    with db.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET report = %s WHERE run_id = %s").format(runs), (str(files.html), state.run_id)
        )
    log.info("report: %d new lead(s) of run %s in %s", new_leads.count, state.run_id, files.html)
    return files


def read_new_leads(
    conn: psycopg.Connection, schema: str, table: str, run_id: str, table_rows: int = REPORT_TABLE_ROWS
) -> NewLeads:
    """What the page shows of the run's leads: counts per state and facility type, per source, of
    filled contact fields and the sources' authorities, computed by PostgreSQL in one scan of the
    run's rows; and the table's first ``table_rows`` leads by lower-cased company, then lead_id."""
    present = {c: _present(c) for c in ("source", "licensing_authority", "state", "facility_type")}
    contact = [
        sql.SQL("({}) AS {}").format(
            sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(_present(c)) for c in cols),
            sql.Identifier(f"filled_{i}"),
        )
        for i, cols in enumerate(CONTACT_FIELDS.values())
    ]
    # Two levels: PostgreSQL runs an aggregate with grouping sets on one core only, so the run's
    # rows are first counted per (source, state, facility type), an aggregate it scans in
    # parallel, and the grouping sets roll those few groups up.
    query = sql.SQL(
        "SELECT GROUPING(source_key) = 0, source_key, state_key, type_key, sum(n)::bigint,"
        # the authority of the source's first lead in the CSV's order (source, lead_id)
        " (min(first_authority))[3], {rolled}"
        " FROM (SELECT source_key, state_key, type_key, count(*) AS n,"
        "  min(ARRAY[source, lead_id, authority]) FILTER (WHERE source_text IS NOT NULL AND authority IS NOT NULL)"
        "  AS first_authority, {filled}"
        "  FROM (SELECT source, lead_id, {source} AS source_text, {authority} AS authority,"
        "   coalesce({source}, {unknown}) AS source_key, coalesce({state}, {unknown}) AS state_key,"
        "   coalesce({facility_type}, {unknown}) AS type_key, {contact}"
        "   FROM {leads} WHERE run_id = %s) AS run"
        "  GROUP BY source_key, state_key, type_key) AS per_group"
        " GROUP BY GROUPING SETS ((source_key), (state_key, type_key))"
    ).format(
        filled=sql.SQL(", ").join(
            sql.SQL("count(*) FILTER (WHERE {}) AS {}").format(sql.Identifier(f"filled_{i}"), sql.Identifier(f"n_{i}"))
            for i in range(len(contact))
        ),
        rolled=sql.SQL(", ").join(
            sql.SQL("sum({})::bigint").format(sql.Identifier(f"n_{i}")) for i in range(len(contact))
        ),
        source=present["source"],
        authority=present["licensing_authority"],
        state=present["state"],
        facility_type=present["facility_type"],
        unknown=sql.Literal(UNKNOWN),
        contact=sql.SQL(", ").join(contact),
        leads=sql.Identifier(schema, table),
    )
    by_state_type: dict[tuple[str, str], int] = {}
    by_source: dict[str, int] = {}
    filled: dict[str, dict[str, int]] = {}
    authorities: dict[str, str] = {}
    for per_source, source, state, facility_type, n, authority, *counts in conn.execute(query, (run_id,)):
        if per_source:
            by_source[source] = n
            filled[source] = dict(zip(CONTACT_FIELDS, counts, strict=True))
            if authority is not None:
                authorities[source] = authority
        else:
            by_state_type[(state, facility_type)] = n
    cur = conn.execute(
        sql.SQL(
            "SELECT {} FROM {} WHERE run_id = %s"
            # C collation: code point order, as Python sorts (the page sorts these rows again by casefold)
            ' ORDER BY lower(coalesce(btrim(company, {}), \'\')) COLLATE "C", lead_id COLLATE "C" LIMIT %s'
        ).format(
            sql.SQL(", ").join(sql.Identifier(c) for c in TABLE_COLUMNS),
            sql.Identifier(schema, table),
            sql.Literal(PY_WHITESPACE),
        ),
        (run_id, table_rows),
    )
    names = [d.name for d in cur.description]
    rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return NewLeads(by_state_type=by_state_type, by_source=by_source, filled=filled, authorities=authorities, rows=rows)


def copy_csv(conn: psycopg.Connection, schema: str, table: str, run_id: str, out: BinaryIO) -> int:
    """Stream the run's leads as ``new_leads.csv`` (see the module docstring) from PostgreSQL's
    ``COPY ... TO STDOUT`` into ``out``, row by row; return the leads written. Sets the session's
    ``client_encoding`` to UTF8."""
    columns = sql.SQL(", ").join(sql.SQL("{} AS {}").format(_csv_value(c), sql.Identifier(c)) for c in CSV_COLUMNS)
    query = sql.SQL(
        "COPY (SELECT {} FROM {} AS l WHERE l.run_id = %s ORDER BY l.source, l.lead_id) TO STDOUT WITH (FORMAT csv, HEADER)"
    ).format(columns, sql.Identifier(schema, table))
    conn.execute("SET client_encoding TO 'UTF8'")
    with conn.cursor() as cur:
        with cur.copy(query, (run_id,)) as copy:
            # PostgreSQL sends one row per message, ending in "\n" (a line break inside a value is
            # in quotes); Python's csv module ends rows with "\r\n".
            for row in copy:
                out.write(row[:-1])
                out.write(b"\r\n")
        return cur.rowcount


def _present(column: str) -> sql.Composed:
    """The column as the page reads text: trimmed as ``str.strip()`` does; NULL when blank."""
    return sql.SQL("nullif(btrim({}, {}), '')").format(sql.Identifier(column), sql.Literal(PY_WHITESPACE))


def _csv_value(column: str) -> sql.Composed:
    """One CSV cell as text, as ``str()`` of the Python value has always written it (NULL: empty)."""
    kind = _COLUMN_TYPES[column]
    if kind == T.StringType():
        return _present(column)
    if kind == T.DateType():
        return sql.SQL("to_char({}, 'YYYY-MM-DD')").format(sql.Identifier(column))
    if kind == T.IntegerType():
        return sql.SQL("{}::text").format(sql.Identifier(column))
    if kind == T.BooleanType():
        return sql.SQL("CASE WHEN {0} THEN 'True' WHEN NOT {0} THEN 'False' END").format(sql.Identifier(column))
    raise TypeError(f"CSV column {column}: no text form for {kind}")


def report_fields(files: ReportFiles) -> dict[str, str]:
    return {"html": str(files.html), "csv": str(files.csv)}
