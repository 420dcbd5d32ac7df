"""Maintenance of the warehouse's Delta tables: compaction (OPTIMIZE) and clean-up (VACUUM).

    leads-maintain --warehouse .local/warehouse [--retain-hours 168] [--no-vacuum]

Weekly MERGEs add small files to ``leads``; bronze and quarantine gain files per snapshot. OPTIMIZE
rewrites each table's small files into few large ones (a new version; readers and the change feed
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


def maintain(spark: SparkSession, wh: Warehouse, retain_hours: int = MIN_RETAIN_HOURS, vacuum: bool = True) -> list:
    """OPTIMIZE (and VACUUM) every Delta table of the warehouse that exists."""
    if retain_hours < MIN_RETAIN_HOURS:
        raise ValueError(f"--retain-hours {retain_hours}: at least {MIN_RETAIN_HOURS} (a week, Delta's safety floor)")
    done = []
    for path in (wh.leads, wh.bronze, wh.quarantine):
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        started = time.monotonic()
        table = DeltaTable.forPath(spark, path)
        metrics = table.optimize().executeCompaction().select("metrics.*").first()
        if vacuum:
            table.vacuum(retain_hours)
        m = Maintained(
            path,
            int(metrics["numFilesRemoved"] or 0),
            int(metrics["numFilesAdded"] or 0),
            vacuum,
            round(time.monotonic() - started, 1),
        )
        log.info(
            "maintain: %s: OPTIMIZE %d file(s) -> %d%s in %.1f s",
            path,
            m.files_removed_by_optimize,
            m.files_added_by_optimize,
            f", VACUUM older than {retain_hours} h" if vacuum else "",
            m.seconds,
        )
        done.append(m)
    return done
