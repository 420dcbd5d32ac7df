"""Maintenance of the warehouse's Delta tables: compaction (OPTIMIZE) and clean-up (VACUUM).

    leads-maintain --warehouse .local/warehouse [--retain-hours 168] [--no-vacuum]

Weekly MERGEs add small files to ``leads`` (the inserts, and each file holding a changed lead is
rewritten, so a big table's files shrink and multiply); bronze and quarantine gain files per
snapshot. OPTIMIZE rewrites each table's small files into few large ones (a new version; readers and the change feed
are unaffected). VACUUM then deletes files no version within ``--retain-hours`` reads. What was
applied is unaffected: the MERGE commits' transaction ids and metadata live in the Delta log
(kept 10 years, ``delta.logRetentionDuration``), which VACUUM never touches.

It takes the warehouse's run lock (runs.py) when a database is given, so it never runs beside a
weekly run. Delivery reads the change feed of versions not yet delivered: VACUUM keeps at least
the files of the last ``--retain-hours`` (7 days by default, Delta's own floor), so run it after
the week's delivery, never with a shorter retention than the time between runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from leadpipe.warehouse import Warehouse

log = logging.getLogger(__name__)

MIN_RETAIN_HOURS = 168  # Delta refuses less unless its retention check is switched off: so do we


@dataclass
class Maintained:
    table: str
    files_removed_by_optimize: int
    files_added_by_optimize: int
    vacuumed: bool
    seconds: float


def maintain(
    spark: SparkSession,
    wh: Warehouse,
    retain_hours: int = MIN_RETAIN_HOURS,
    vacuum: bool = True,
    vacuum_leads: bool = True,
) -> list:
    """OPTIMIZE (and VACUUM) every Delta table of the warehouse that exists. ``vacuum_leads``
    False keeps every file of the leads table: its change feed of versions not yet delivered to
    PostgreSQL must stay readable (see :func:`undelivered_versions`)."""
    if retain_hours < MIN_RETAIN_HOURS:
        raise ValueError(f"--retain-hours {retain_hours}: at least {MIN_RETAIN_HOURS} (a week, Delta's safety floor)")
    done = []
    for path in (wh.leads, wh.bronze, wh.quarantine):
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        started = time.monotonic()
        table = DeltaTable.forPath(spark, path)
        metrics = table.optimize().executeCompaction().select("metrics.*").first()
        vacuumed = vacuum and (vacuum_leads or path != wh.leads)
        if vacuumed:
            table.vacuum(retain_hours)
        m = Maintained(
            path,
            int(metrics["numFilesRemoved"] or 0),
            int(metrics["numFilesAdded"] or 0),
            vacuumed,
            round(time.monotonic() - started, 1),
        )
        log.info(
            "maintain: %s: OPTIMIZE %d file(s) -> %d%s in %.1f s",
            path,
            m.files_removed_by_optimize,
            m.files_added_by_optimize,
            f", VACUUM older than {retain_hours} h" if vacuumed else ", no VACUUM",
            m.seconds,
        )
        done.append(m)
    return done


def undelivered_versions(spark: SparkSession, wh: Warehouse, db, schema: str) -> tuple[int, int] | None:
    """(first, last) versions of the leads table not yet in PostgreSQL's delivery ledger, or None."""
    from leadpipe.deliver import _max_delivered, table_position

    if not DeltaTable.isDeltaTable(spark, wh.leads):
        return None
    table_id, current = table_position(spark, wh.leads)
    with db.connect(autocommit=True) as conn:
        done = _max_delivered(conn, schema, table_id)
    first = 0 if done is None else done + 1
    return (first, current) if first <= current else None
