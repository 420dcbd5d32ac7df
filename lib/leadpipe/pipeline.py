"""The weekly job, stage by stage:

    lock -> discover -> plan -> sniff -> read -> map + standardize -> validate/quarantine
         -> bronze -> hold check -> MERGE (CDC) -> deliver -> record

An input with several snapshot dates (a backfill) is sniffed, read, standardized and tagged
for every date in one Spark job first (``read_ahead``); then each date goes through plan ->
bronze -> MERGE in date order, as a single week does.

Guarantees, in the order the steps below keep them:

1. **One writer.** The run holds the warehouse's lock (runs.py) for its whole life; a second
   run refuses to start; a killed run's lock dies with it.
2. **Each snapshot applied once.** The plan asks the leads table itself (merge.py: Delta
   transaction ids and commit metadata) what each source is at. A (source, snapshot) already
   applied with the same files is skipped before it is parsed; one applied with other bytes is
   reported (``changed_after_apply``), never merged again; one older than the source's applied
   snapshot is quarantined (``stale_snapshot``), never merged. Every MERGE records, in its own
   commit, the run, the snapshot and its files, and Delta refuses to commit a snapshot at or
   before an applied one, so no kill, retry or race can apply anything twice or out of order.
3. **Derived tables are rebuilt, never trusted.** Bronze and quarantine replace their (source,
   snapshot) rows; nothing reads them to decide anything.
4. **Destructive snapshots are held.** A snapshot that would remove too many active leads, or
   is much smaller than the previous one, is not merged (its rows stay in bronze) unless the
   operator names the source in ``apply_held``; the other sources go on; the run is partial.
5. **Each lead delivered once.** Delivery (deliver.py) sends the inserts of every Delta version
   not in PostgreSQL's ledger, and records them in the same transaction as the leads.
6. **Every file accounted for; one bad source never stops the others.** Each input file ends
   in the summary's ``files`` once: its snapshot's status, ``unmatched``, or ``rejected`` with a
   reason code (discover.py: its name; sniff.py: its bytes). A rejected file fails its source's
   snapshot (a full refresh must not be applied from part of its files); a source whose rules or
   read fail is failed alone (its rows are materialized apart from the others'); the other
   sources of the snapshot merge and deliver, and the run is partial.
7. **Every run recorded.** ``pipeline_runs`` gets the run at start and its outcome at the end;
   the summary (state.py) is returned on every path, failures included.

``LEADPIPE_FAULT`` (faults.py) kills the process at named points for the kill tests.
"""

from __future__ import annotations

import codecs
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from leadpipe import faults
from leadpipe import warehouse as wh_mod
from leadpipe.archive import archive_files
from leadpipe.canonical import ISSUES_COLUMN, map_to_canonical
from leadpipe.config import Settings, SourceConfig
from leadpipe.deliver import deliver, ensure_tables
from leadpipe.discover import Discovery, RejectedName, SnapshotFile, discover, list_files
from leadpipe.merge import (
    AppliedSnapshot,
    AppliedState,
    DeltaConflictError,
    SnapshotDiff,
    diff_snapshot,
    merge_source_snapshot,
    read_applied_state,
    table_exists,
)
from leadpipe.postgres import DbTarget
from leadpipe.read import read_snapshots, read_source
from leadpipe.report import field_quality
from leadpipe.run_report import default_reports_location, publish, report_fields
from leadpipe.runs import RunLock, RunLocked, RunRecord
from leadpipe.session import RULES_PLAN_CONF, session_conf
from leadpipe.sniff import FileFormat, Rejection, inspect_file
from leadpipe.state import (
    ALREADY_APPLIED,
    APPLIED,
    CHANGED_AFTER_APPLY,
    FAILED,
    HELD,
    NOT_REACHED,
    REJECTED,
    STALE,
    UNMATCHED,
    FileOutcome,
    RunSummary,
    SnapshotOutcome,
)
from leadpipe.validate import REASON, duplicates, leads_of, mark_duplicates, quarantine_of, tag_rows

log = logging.getLogger(__name__)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(
            f"run id {run_id!r}: 1-64 characters of letters, digits and . _ : -, starting with a letter or digit"
        )
    return run_id


@dataclass
class RunResult:
    state: RunSummary
    quality: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        return self.state.to_dict()

    @property
    def ok(self) -> bool:
        return self.state.ok


@dataclass
class Run:
    """Everything one run needs, passed as one object between the steps."""

    spark: SparkSession
    sources: dict[str, SourceConfig]
    settings: Settings
    wh: wh_mod.Warehouse
    db: DbTarget | None
    state: RunSummary
    applied: AppliedState = field(default_factory=AppliedState)
    apply_held: frozenset[str] = frozenset()
    quality: bool = True
    quality_entries: list[dict[str, Any]] = field(default_factory=list)
    lock: RunLock | None = None
    reports: str | None = None  # where the run's report goes (None: no report)
    blocked: dict[str, str] = field(default_factory=dict)  # source -> its snapshot held or failed in this run
    forced: set[str] = field(default_factory=set)  # sources applied on purpose (--apply-held)
    quarantined: set[tuple[str, date]] | None = None  # (source, snapshot) with rows in quarantine
    found: Discovery | None = None  # every file listed in the input
    formats: dict[str, FileFormat] = field(default_factory=dict)  # file uri -> how it was read
    rejections: dict[str, Rejection] = field(default_factory=dict)  # file uri -> why it was not read
    archive: str | None = None  # where processed files move after delivery (archive.py)
    archived: dict[str, str] = field(default_factory=dict)  # file uri -> its archive copy
    inspected: dict[str, FileFormat | Rejection] = field(default_factory=dict)  # file uri -> sniffed ahead
    ahead: dict[tuple[str, date], str] = field(default_factory=dict)  # (source, snapshot) -> its rows read ahead


def run_weekly(
    spark: SparkSession,
    sources: dict[str, SourceConfig],
    input_uri: str,
    warehouse: str,
    db: DbTarget | None,
    settings: Settings,
    run_id: str | None = None,
    quality: bool = True,
    apply_held: frozenset[str] | set[str] | tuple[str, ...] = frozenset(),
    reports: str | None = None,
    archive: str | None = None,
) -> RunResult:
    """Run the weekly job on every snapshot in ``input_uri``; never raises for a run-time
    failure (the summary says what happened), only :class:`leadpipe.runs.RunLocked` when
    another run holds the warehouse and ``ValueError`` for a bad run id or source name.
    ``reports``: folder of the run reports (default: settings ``reports``, else ``reports/``
    beside the warehouse); written when there is a database to read the delivered leads from.
    ``archive``: where processed input files move after delivery (default: settings ``archive``;
    None: they stay); only with a database, since nothing is archived before it is delivered."""
    run_id = check_run_id(run_id or new_run_id())
    unknown = sorted(set(apply_held) - set(sources))
    if unknown:
        raise ValueError(f"apply_held names unknown source(s) {unknown}; sources: {sorted(sources)}")
    unknown = sorted(set(settings.expected_sources) - set(sources))
    if unknown:
        raise ValueError(
            f"{settings.path}: expected_sources names unknown source(s) {unknown}; sources: {sorted(sources)}"
        )
    if db is not None:
        db = db.with_settings(settings.postgres)
    run = Run(
        spark=spark,
        sources=sources,
        settings=settings,
        wh=wh_mod.Warehouse(warehouse),
        db=db,
        state=RunSummary(run_id, input=input_uri, warehouse=warehouse),
        apply_held=frozenset(apply_held),
        quality=quality,
        reports=reports or settings.reports or (None if "://" in warehouse else default_reports_location(warehouse)),
        archive=archive or settings.archive,
    )
    record = RunRecord(db, settings.postgres.schema_) if db is not None else None
    if db is not None:
        try:
            take_lock(run, record)
        except RunLocked:
            raise  # nothing else has happened
        except Exception as exc:  # PostgreSQL unreachable or refusing: nothing started, nothing to record
            log.error("lock: %s", _first_line(exc))
            if run.lock is not None:
                run.lock.release()
            run.state.fail(f"could not start: {type(exc).__name__}: {_first_line(exc)}")
            run.state.finish()
            return RunResult(run.state)
    try:
        with run.state.timed("discover"):
            found = discover(spark, input_uri, sources)
        run.found = found
        run.state.unmatched_files = found.unmatched
        present = {f.source_id for f in found.files} | {r.source_id for r in found.rejected}
        run.state.missing_sources = [sid for sid in settings.expected_sources if sid not in present]
        for sid in run.state.missing_sources:
            run.state.warnings.append(
                f"missing_sources: {sid} is expected every week ({settings.path}: expected_sources) and has no file "
                f"in {input_uri}; its leads are left as they are"
            )
        if not found.files:
            run.state.fail(f"no file in {input_uri} matches a source's file_pattern")
        with run.state.timed("state"):
            run.applied = read_applied_state(spark, run.wh.leads)
        dates = found.by_date()
        if len(dates) > 1:
            read_ahead(run, dates)
        started = time.monotonic()
        for i, (snapshot_date, files_by_source) in enumerate(dates.items(), 1):
            apply_snapshot_date(run, snapshot_date, files_by_source)
            progress(run, i, len(dates), snapshot_date, time.monotonic() - started)
        with run.state.timed("deliver"):
            deliver_backlog(run)
        with run.state.timed("archive"):
            archive_processed(run)
        for sid in sorted(run.apply_held - run.forced):
            run.state.warnings.append(f"--apply-held {sid}: no snapshot of {sid} was held in this run; nothing forced")
    except Exception as exc:  # the summary says what happened; the traceback goes to the log
        log.exception("run %s failed", run_id)
        run.state.fail(f"{type(exc).__name__}: {_first_line(exc)}")
    finally:
        finish(run, record)
    faults.reach("at_end")
    return RunResult(run.state, run.quality_entries)


# -- 1. one writer ---------------------------------------------------------------------------


def take_lock(run: Run, record: RunRecord) -> None:
    ensure_tables(run.db, run.settings.postgres.schema_, run.settings.postgres.leads_table)
    run.lock = RunLock(run.db, run.wh.root, run.settings.postgres.schema_)
    run.lock.acquire(run.state.run_id)
    if wh_mod.delete_path(run.spark, run.wh.scratch):  # only a killed run leaves it; we hold the lock
        log.warning("lock: deleted %s left by an interrupted run", run.wh.scratch)
    record.start(run.lock.conn, run.state.run_id, run.wh.root, run.state.input)


def hold_lock(run: Run) -> bool:
    """Before a write: make sure the run still holds its lock (see runs.RunLock.check). False
    when the lock was lost and taken again: the leads table's state is re-read (another run may
    have written meanwhile) and the caller re-plans."""
    if run.lock is None or run.lock.check(run.state.run_id):
        return True
    run.applied = read_applied_state(run.spark, run.wh.leads)
    return False


def finish(run: Run, record: RunRecord | None) -> None:
    account_files(run)
    run.state.finish()
    if record is not None and run.reports:
        with run.state.timed("report"):
            write_run_report(run)
    log.info(
        "report: run %s %s; delivered %d lead(s); %s",
        run.state.run_id,
        run.state.status,
        run.state.delivered,
        {o.source + " " + o.snapshot_date.isoformat(): o.status for o in run.state.snapshots},
    )
    try:
        if record is not None:
            record.finish(run.state.to_dict())
    except Exception as exc:
        log.error("run record: could not write the end of run %s: %s", run.state.run_id, _first_line(exc))
    finally:
        scratch = run.wh.scratch_of_run(run.state.run_id)
        try:  # each snapshot's folder went with it; the run's own too (with rows read ahead that no
            # snapshot used), so that the next run finds no scratch unless this one was killed
            wh_mod.delete_path(run.spark, scratch)
        except Exception as exc:
            log.warning("lock: could not delete %s: %s", scratch, _first_line(exc))
        if run.lock is not None:
            run.lock.release()


def account_files(run: Run) -> None:
    """Every file listed in the input, once, in the summary: its snapshot's status, or why it was
    not read (rejected with a reason, unmatched)."""
    if run.found is None:
        return
    status = {(o.source, o.snapshot_date): o for o in run.state.snapshots}
    out: list[FileOutcome] = []
    for f in run.found.files:
        o = status.get((f.source_id, f.snapshot_date))
        rejection = run.rejections.get(f.uri)
        fmt = run.formats.get(f.uri)
        entry = FileOutcome(f.uri, f.name, f.size, o.status if o else NOT_REACHED, f.source_id, f.snapshot_date)
        if rejection is not None:
            entry.status, entry.reason, entry.message = REJECTED, rejection.reason, rejection.message
            entry.records, entry.encoding, entry.delimiter = rejection.records, rejection.encoding, rejection.delimiter
        elif fmt is not None:
            entry.encoding, entry.delimiter = codecs.lookup(fmt.encoding).name, fmt.delimiter
            entry.renamed_columns, entry.missing_columns, entry.extra_columns = fmt.renamed, fmt.missing, fmt.extra
        entry.archived_to = run.archived.get(f.uri)
        out.append(entry)
    for r in run.found.rejected:
        out.append(FileOutcome(r.uri, r.name, r.size, REJECTED, r.source_id, reason=r.reason, message=r.message))
    for uri in run.found.unmatched:
        out.append(
            FileOutcome(
                uri,
                uri.rsplit("/", 1)[-1],
                run.found.sizes.get(uri, 0),
                UNMATCHED,
                message="no source's file_pattern matches its name: not read (a new agency needs a conf/sources file)",
            )
        )
    run.state.files = sorted(out, key=lambda e: e.file)
    rejected: dict[str, int] = {}
    for e in out:
        if e.status == REJECTED:
            rejected[e.reason] = rejected.get(e.reason, 0) + 1
    run.state.rejected_files = rejected
    for r in run.found.rejected:
        run.state.errors.append(f"{r.name}: rejected ({r.reason}): {r.message}")


def write_run_report(run: Run) -> None:
    """The report people read (run_report.py); a failure to write it is a warning, not a failed run."""
    pg = run.settings.postgres
    try:
        files = publish(run.db, pg.schema_, pg.leads_table, run.state, run.reports)
    except Exception as exc:
        log.warning("report: not written: %s", _first_line(exc))
        run.state.warnings.append(f"report not written: {type(exc).__name__}: {_first_line(exc)}")
        return
    run.state.report = report_fields(files)


def progress(run: Run, done: int, total: int, snapshot_date: date, elapsed: float) -> None:
    """One line per snapshot date: done/total, what happened to it, elapsed and estimated remaining
    (a backfill of years of snapshots is one run; a killed one resumes where the table says)."""
    mine = [o for o in run.state.snapshots if o.snapshot_date == snapshot_date]
    statuses = ", ".join(f"{o.source} {o.status}" for o in mine)
    rows = sum(o.rows_read for o in mine)
    left = elapsed / done * (total - done)
    log.info(
        "progress: snapshot %d/%d (%s): %s; %d row(s) read; %.1f s elapsed, about %.0f s left",
        done,
        total,
        snapshot_date,
        statuses or "nothing to do",
        rows,
        elapsed,
        left,
    )


# -- 2. each snapshot applied once: the plan -------------------------------------------------


def plan(run: Run, source: str, snapshot_date: date, files: list[SnapshotFile]) -> SnapshotOutcome:
    """What to do with one (source, snapshot), from the leads table's own record. The outcome's
    status is empty when the snapshot must be read and merged."""
    o = SnapshotOutcome(source, snapshot_date, [f.uri for f in files])
    latest = run.applied.latest.get(source)
    if latest is None or snapshot_date > latest:
        if source in run.blocked:  # applying a newer snapshot would make the blocked one unappliable
            o.status = HELD
            o.message = f"{source} {snapshot_date} held: {run.blocked[source]}; it waits until that one is resolved"
        return o
    done = run.applied.applied.get((source, snapshot_date))
    mine = {(f.name, f.size, f.checksum) for f in files}
    if done is not None and set(done.files) != mine:
        before = {name: (size, checksum) for name, size, checksum in done.files}
        now = {f.name: (f.size, f.checksum) for f in files}
        diff = sorted(n for n in before.keys() | now.keys() if before.get(n) != now.get(n))
        o.status = CHANGED_AFTER_APPLY
        o.message = (
            f"{source} {snapshot_date}: applied by run {done.run_id} (leads version {done.version}) from other "
            f"bytes; differing file(s) {diff}. Not merged: a snapshot is applied once. If the agency corrected "
            "the export, deliver it under a new snapshot date."
        )
    elif done is not None or snapshot_date == latest:
        o.status = ALREADY_APPLIED
        o.leads_version = done.version if done else None
    else:
        o.status = STALE
    return o


#: The partition column of the rows read ahead: ``<source>_<yyyymmdd>`` (source ids are
#: ``[a-z][a-z0-9_]*``, so the folder name needs no escaping).
AHEAD_KEY = "snapshot_key"


def read_ahead(run: Run, dates: dict[date, dict[str, list[SnapshotFile]]]) -> None:
    """A backfill (an input with several snapshot dates): every (source, snapshot) that the plan
    reads and merges is sniffed, read, mapped, standardized and tagged in one Spark job, into the
    run's scratch, a folder per (source, snapshot) (``run.ahead``). Each snapshot then starts
    from its folder instead of parsing its files and building and compiling the rules' plan
    again: that plan is built once per source and run, not once per snapshot.

    Nothing is decided here. When its turn comes, each snapshot is planned again (in date order,
    from the leads table's state as it is then), and its rows read ahead are used only when it is
    still to be read and merged; rows of a snapshot that is held, or that waits behind a held or
    failed one, are never used and go with the run's scratch. A (source, snapshot) with a file
    sniff rejects, or whose plan cannot be built, is left to its turn, which fails it with its
    reason; when the job fails, every snapshot is read at its turn as if nothing was read ahead.
    Reading ahead changes when rows are read, never what is applied. The duplicate-key search
    stays per snapshot (a lead_id is duplicated within a snapshot), in :func:`materialize`.
    The snapshots of a source are read together only when their files give the same columns
    (a snapshot's raw map and extras are made of its own files' columns); a header that changes
    mid-backfill makes one plan per header.

    One known difference: rows reuse the stored standardization of the leads table as it was when
    the run started (map_to_canonical), not as the earlier snapshots of the backfill leave it.
    Every rule gives the same value either way except a two-digit year, whose century window
    moves with the snapshot date: an unchanged value first stored earlier in the same backfill
    keeps its century when the snapshots are applied one run at a time, and here is placed in the
    window of its own snapshot. Only a value at the edge of the window (about 20 years after the
    snapshot date) can differ."""
    keys: list[tuple[str, date]] = []
    # per source and header: a snapshot's raw map and extras are made of its own files' columns
    files_of: dict[tuple[str, tuple[str, ...]], list[tuple[SnapshotFile, FileFormat, date]]] = {}
    with run.state.timed("sniff"):
        for d, by_source in dates.items():
            for sid, files in by_source.items():
                if plan(run, sid, d, files).status:
                    continue
                cfg = run.sources[sid]
                found = [(f, inspect_file(run.spark, f.uri, f.size, cfg)) for f in files]
                run.inspected.update((f.uri, result) for f, result in found)
                if _lost_files(run, sid, d) or any(isinstance(result, Rejection) for _, result in found):
                    continue  # its turn says why
                keys.append((sid, d))
                header: list[str] = []  # the columns its files give, in the order read_source unions them
                for _, fmt in found:
                    header += [c for c in fmt.columns if c not in header]
                files_of.setdefault((sid, tuple(header)), []).extend((f, result, d) for f, result in found)
    if len(keys) < 2:
        return
    started = time.monotonic()
    frames: dict[str, DataFrame] = {}
    with run.state.timed("read"):
        previous = run.spark.read.format("delta").load(run.wh.leads) if table_exists(run.spark, run.wh.leads) else None
        failed: set[str] = set()
        for (sid, _), files in sorted(files_of.items()):
            try:
                raw = read_snapshots(run.spark, files, run.sources[sid], log_warnings=False)
                mapped = map_to_canonical(raw, run.sources[sid], previous)
            except Exception as exc:  # each of its snapshots is read, and fails, at its turn
                log.error("read ahead: %s: %s; its snapshots are read one at a time", sid, _first_line(exc))
                failed.add(sid)
                continue
            frames[sid] = frames[sid].unionByName(mapped) if sid in frames else mapped
        for sid in failed:
            frames.pop(sid, None)
        keys = [(sid, d) for sid, d in keys if sid in frames]
        if not keys:
            return
        multi_line = {
            sid: _multi_line(run.sources[sid])
            for (sid, _), files in files_of.items()
            if sid in frames and any(fmt.multi_line for _, fmt, _ in files)
        }
        path = f"{run.wh.scratch_of_run(run.state.run_id)}/ahead"
        try:
            rows = _tag(run, frames, sorted(frames), {}, multi_line).withColumn(
                AHEAD_KEY, F.concat(F.col("source"), F.lit("_"), F.date_format("snapshot_date", "yyyyMMdd"))
            )
            with session_conf(run.spark, RULES_PLAN_CONF):
                rows.write.partitionBy(AHEAD_KEY).mode("overwrite").parquet(path)
            present = {
                uri.rsplit("/", 2)[-2] for uri, name, _ in list_files(run.spark, path) if name.endswith(".parquet")
            }
        except Exception as exc:
            log.warning("read ahead: failed (%s); each snapshot is read at its turn", _first_line(exc))
            try:
                wh_mod.delete_path(run.spark, path)
            except Exception as again:  # the run's scratch goes when it ends (finish)
                log.warning("read ahead: could not delete %s: %s", path, _first_line(again))
            return
    for sid, d in keys:  # a (source, snapshot) without rows has no folder: its turn reads it
        folder = f"{AHEAD_KEY}={sid}_{d:%Y%m%d}"
        if folder in present:
            run.ahead[(sid, d)] = f"{path}/{folder}"
    log.info(
        "read ahead: %d snapshot(s) of %d source(s) read, standardized and tagged in one job, %.1f s",
        len(run.ahead),
        len(frames),
        time.monotonic() - started,
    )


def apply_snapshot_date(run: Run, snapshot_date: date, files_by_source: dict[str, list[SnapshotFile]]) -> None:
    """All sources of one snapshot date: plan each, read the ones to apply (and the stale ones,
    to quarantine them), write bronze and quarantine, then hold-check and MERGE each source."""
    outcomes = {sid: plan(run, sid, snapshot_date, files) for sid, files in files_by_source.items()}
    for o in outcomes.values():
        if o.status in (ALREADY_APPLIED, CHANGED_AFTER_APPLY, HELD):
            log.info("plan: %s %s %s: not read", o.source, snapshot_date, o.status)
            run.state.record(o)
    to_read = {sid: files for sid, files in files_by_source.items() if outcomes[sid].status in ("", STALE)}
    if not to_read:
        return
    with run.state.timed("sniff"):
        sniffed = {sid: sniff_source(run, run.sources[sid], files) for sid, files in to_read.items()}
    failures = {sid: why for sid, (_, why) in sniffed.items() if why}
    ahead = {  # rows read ahead (a backfill) are used only for a snapshot the plan still merges
        sid: run.ahead.pop((sid, snapshot_date))
        for sid in sorted(to_read)
        if (sid, snapshot_date) in run.ahead and outcomes[sid].status == "" and sid not in failures
    }
    to_map = {sid: formats for sid, (formats, why) in sniffed.items() if not why and sid not in ahead}
    with run.state.timed("read"):
        previous = None
        if to_map and table_exists(run.spark, run.wh.leads):
            previous = run.spark.read.format("delta").load(run.wh.leads)
        frames, read_failures = map_snapshot(run.spark, run.sources, to_map, snapshot_date, previous)
    failures.update(read_failures)
    stale = {
        sid: f"snapshot {snapshot_date} is older than {run.applied.latest[sid]}, already applied for {sid}"
        for sid, o in outcomes.items()
        if o.status == STALE
    }
    multi_line = {  # sources with a file read multi-line: where a line break in a cell is a runaway quote
        sid: _multi_line(run.sources[sid])
        for sid, (formats, _) in sniffed.items()
        if any(fmt.multi_line for _, fmt in formats)
    }
    tagged, write_failures = materialize(run, frames, stale, multi_line, snapshot_date, ahead)
    failures.update(write_failures)
    for sid, message in sorted(failures.items()):
        if outcomes[sid].status != STALE:  # a stale snapshot blocks nothing: it is never merged
            run.blocked[sid] = f"its snapshot {snapshot_date} failed"
        outcomes[sid].status, outcomes[sid].message = FAILED, message
        run.state.record(outcomes[sid])
    if tagged is None:
        _drop_scratch(run, snapshot_date, ahead)
        return
    cfgs = [run.sources[sid] for sid in sorted({*frames, *ahead}) if sid not in failures]
    try:
        with run.state.timed("read"):
            count_rows(run, tagged, [outcomes[c.id] for c in cfgs])
        faults.reach("after_read")
        with run.state.timed("bronze"):
            rejected = sum(outcomes[c.id].rows_rejected for c in cfgs)
            write_derived(run, tagged, cfgs, snapshot_date, list(stale), rejected)
        faults.reach("after_bronze")
        for i, cfg in enumerate(cfgs):
            o = outcomes[cfg.id]
            if o.status != STALE:
                try:
                    merge_one(run, cfg, o, leads_of(tagged.filter(F.col("source") == cfg.id)), files_by_source[cfg.id])
                except DeltaConflictError as exc:  # this source failed; the others go on
                    o.status, o.message = FAILED, str(exc)
                except Exception as exc:  # the run stops here: say so for this source and the rest
                    o.status, o.message = FAILED, f"{cfg.id} {snapshot_date}: {type(exc).__name__}: {_first_line(exc)}"
                    run.state.record(o)
                    for rest in cfgs[i + 1 :]:
                        r = outcomes[rest.id]
                        r.status = r.status or FAILED
                        r.message = r.message or f"{rest.id} {snapshot_date}: not merged: the run stopped at {cfg.id}"
                        run.state.record(r)
                    raise
            elif o.message is None:
                o.message = f"{cfg.id}: {stale[cfg.id]}; its {o.rows_read} row(s) are quarantined as stale_snapshot"
            if o.status in (HELD, FAILED):
                run.blocked.setdefault(cfg.id, f"its snapshot {snapshot_date} was {o.status}")
            run.state.record(o)
    finally:
        _drop_scratch(run, snapshot_date, ahead)


def _drop_scratch(run: Run, snapshot_date: date, ahead: dict[str, str]) -> None:
    """The snapshot is done: its scratch rows go (its own folder, and its rows read ahead)."""
    for path in [run.wh.scratch_for(run.state.run_id, snapshot_date), *ahead.values()]:
        wh_mod.delete_path(run.spark, path)


def materialize(
    run: Run,
    frames: dict[str, DataFrame],
    stale: dict[str, str],
    multi_line: dict[str, tuple[list[str], int]],
    snapshot_date: date,
    ahead: dict[str, str] | None = None,
) -> tuple[DataFrame | None, dict[str, str]]:
    """Tag (validate.tag_rows) and write every source's canonical rows once, into the run's
    scratch Parquet, find the duplicate keys from those files (validate.duplicates, a few narrow
    columns) and write them beside, and return the rows read back and tagged
    (validate.mark_duplicates: what validate.tag returns), with the sources that failed
    (source -> message). ``ahead``: sources whose rows of this snapshot :func:`read_ahead`
    already wrote, tagged (source -> folder): they join the rows written here.

    Everything after this (counts, bronze, quarantine, quality, hold check, one MERGE per source)
    reads these files: the agency's files are parsed and the rules evaluated once per snapshot,
    memory stays bounded (nothing is cached on the driver), and every later plan is a small scan
    instead of the rules' expression tree, which Spark would otherwise re-analyze for each job.
    The rows are written as they are mapped, with no shuffle: only the duplicate search shuffles,
    and only four narrow columns of each candidate row (at 1M rows the wide rows' shuffle and
    sort had been about 600 MB).
    When the write of all sources together fails, each source is written alone, so that one
    source's failure (a file that vanished, a rule that raised) fails that source only."""
    ahead = ahead or {}
    if not frames and not ahead:
        return None, {}
    path = run.wh.scratch_for(run.state.run_id, snapshot_date)

    def tagged_rows(sids: list[str]) -> DataFrame:
        return _tag(run, frames, sids, stale, multi_line)

    sids = sorted(frames)
    written = [ahead[sid] for sid in sorted(ahead)]
    failures: dict[str, str] = {}
    if sids:
        with run.state.timed("read"), session_conf(run.spark, RULES_PLAN_CONF):
            alone: list[str] = []  # written one by one, after the write of them all failed
            try:
                tagged_rows(sids).write.mode("overwrite").parquet(f"{path}/all")
                written.append(f"{path}/all")
            except Exception as exc:
                log.error("read: %s %s: %s; reading each source alone", sids, snapshot_date, _first_line(exc))
                if len(sids) == 1:
                    failures[sids[0]] = f"{sids[0]} {snapshot_date}: {type(exc).__name__}: {_first_line(exc)}"
                else:
                    alone = sids
            for sid in alone:
                try:
                    tagged_rows([sid]).write.mode("overwrite").parquet(f"{path}/by_source/{sid}")
                    written.append(f"{path}/by_source/{sid}")
                except Exception as exc:
                    log.error("read: %s %s failed: %s", sid, snapshot_date, _first_line(exc))
                    failures[sid] = f"{sid} {snapshot_date}: {type(exc).__name__}: {_first_line(exc)}"
    if not written:
        return None, failures
    everything = sorted({*frames, *ahead})
    with run.state.timed("read"):
        rows = run.spark.read.parquet(*written)
        try:
            duplicates(rows).write.mode("overwrite").parquet(f"{path}/duplicates")
        except Exception as exc:  # the storage failed under us: no source of this date can be applied
            log.error("read: %s %s: the duplicate-key search failed: %s", everything, snapshot_date, _first_line(exc))
            why = f"{snapshot_date}: duplicate-key search failed: {type(exc).__name__}: {_first_line(exc)}"
            return None, {sid: failures.get(sid, f"{sid} {why}") for sid in everything}
        return mark_duplicates(rows, run.spark.read.parquet(f"{path}/duplicates")), failures


def _tag(
    run: Run,
    frames: dict[str, DataFrame],
    sids: list[str],
    stale: dict[str, str],
    multi_line: dict[str, tuple[list[str], int]],
) -> DataFrame:
    """The canonical rows of ``sids`` (unioned) with the tags a row has on its own (validate.tag_rows)."""
    union = frames[sids[0]]
    for sid in sids[1:]:
        union = union.unionByName(frames[sid])
    cfgs = [run.sources[sid] for sid in sids]
    return tag_rows(
        union,
        {c.id: c.identity.columns for c in cfgs},
        {sid: why for sid, why in stale.items() if sid in sids},
        {sid: cols for sid, cols in multi_line.items() if sid in sids},
    )


def sniff_source(
    run: Run, cfg: SourceConfig, files: list[SnapshotFile]
) -> tuple[list[tuple[SnapshotFile, FileFormat]], str | None]:
    """Sniff every file of one source's snapshot (sniff.py): (each file with its format, None), or
    (what could be read, the message) when a file is rejected: the snapshot is then not applied,
    since a full refresh applied from part of its files would remove the leads of the rest."""
    formats, rejected = [], []
    for f in files:
        result = run.inspected.pop(f.uri, None)
        if result is None:
            result = inspect_file(run.spark, f.uri, f.size, cfg)
        if isinstance(result, Rejection):
            run.rejections[f.uri] = result
            rejected.append(f"{f.name}: {result.reason}: {result.message}")
            log.error("sniff: %s rejected (%s)%s", f.uri, result.reason, _records(result.records))
        else:
            run.formats[f.uri] = result
            formats.append((f, result))
            run.state.warnings.extend(f"{f.name}: {w}" for w in result.warnings)
            log.info(
                "sniff: %s: %s, delimiter %r, %d column(s), %d renamed, %d missing, %d extra",
                f.name,
                codecs.lookup(result.encoding).name,
                result.delimiter,
                len(result.columns),
                len(result.renamed),
                len(result.missing),
                len(result.extra),
            )
    lost = _lost_files(run, cfg.id, files[0].snapshot_date)
    if not rejected and not lost:
        return formats, None
    others = "" if not formats else f" ({len(formats)} other file(s) not applied either)"
    rejected += [f"{r.name}: {r.reason}: {r.message}" for r in lost]
    return formats, (
        f"{cfg.id} {files[0].snapshot_date}: not applied: file(s) rejected{others}: " + "; ".join(rejected)
    )


def _lost_files(run: Run, sid: str, snapshot_date: date) -> list[RejectedName]:
    """Files of this (source, snapshot) that discovery could not read (their checksum)."""
    rejected = run.found.rejected if run.found else []
    return [r for r in rejected if r.source_id == sid and r.snapshot_date == snapshot_date]


def _multi_line(cfg: SourceConfig) -> tuple[list[str], int]:
    """For a source with a file read multi-line: the columns whose cells may hold line breaks,
    and how many lines at most (validate.tag_rows: a runaway quote otherwise)."""
    return cfg.csv.multi_line_columns, cfg.csv.multi_line_max_lines


def _records(n: int | None) -> str:
    return "" if n is None else f", {n} record(s)"


def map_snapshot(
    spark: SparkSession,
    sources: dict[str, SourceConfig],
    files_by_source: dict[str, list[tuple[SnapshotFile, FileFormat]]],
    snapshot_date: date,
    previous: DataFrame | None = None,
) -> tuple[dict[str, DataFrame], dict[str, str]]:
    """read + map to canonical, per source of one snapshot date, each file read as sniffed.
    ``previous``: the leads table, whose unchanged rows need no standardizing (map_to_canonical).

    Returns (source -> its canonical rows, source -> error for the sources whose plan could not
    be built). Nothing is computed here: Spark runs the plans when they are written.
    """
    frames: dict[str, DataFrame] = {}
    failures: dict[str, str] = {}
    for sid, files in sorted(files_by_source.items()):
        try:
            raw = read_source(spark, files, sources[sid], snapshot_date)
            frames[sid] = map_to_canonical(raw, sources[sid], previous)
        except Exception as exc:
            log.error("read: %s %s: %s", sid, snapshot_date, _first_line(exc))
            failures[sid] = f"{sid} {snapshot_date}: {type(exc).__name__}: {_first_line(exc)}"
    return frames, failures


# -- 3. read, validate, derived tables -------------------------------------------------------


def count_rows(run: Run, tagged: DataFrame, outcomes: list[SnapshotOutcome]) -> None:
    """Rows read, loaded and rejected by reason per source: one aggregation of the cached rows."""
    by_source = {o.source: o for o in outcomes}
    issues: dict[str, int] = {}
    for r in (
        tagged.groupBy("source", REASON)
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.size(ISSUES_COLUMN)).alias("issues"))
        .collect()
    ):
        o = by_source[r.source]
        o.rows_read += int(r.n)
        if r[REASON] is None:
            o.rows_loaded += int(r.n)
        else:
            o.rows_rejected += int(r.n)
            o.rejected_by_reason[r[REASON]] = int(r.n)
        issues[r.source] = issues.get(r.source, 0) + int(r.issues or 0)
    for o in outcomes:
        log.info(
            "validate: %s %s: %d read, %d loaded, %d quarantined %s; %d field value(s) failed a rule",
            o.source,
            o.snapshot_date,
            o.rows_read,
            o.rows_loaded,
            o.rows_rejected,
            o.rejected_by_reason,
            issues.get(o.source, 0),
        )


def write_derived(
    run: Run, tagged: DataFrame, cfgs: list[SourceConfig], snapshot_date: date, stale: list[str], rejected: int
) -> None:
    ids = [c.id for c in cfgs]
    wh_mod.write_bronze(run.spark, run.wh, tagged, ids, snapshot_date, run.state.run_id)
    if run.quarantined is None:  # which (source, snapshot) have rows there: read once per run
        run.quarantined = wh_mod.quarantined_snapshots(run.spark, run.wh)
    if rejected or any((sid, snapshot_date) in run.quarantined for sid in ids):
        wh_mod.write_quarantine(run.spark, run.wh, quarantine_of(tagged), ids, snapshot_date, run.state.run_id, stale)
        run.quarantined.update((sid, snapshot_date) for sid in ids)
        log.info("bronze: %s %s written (every row read); quarantine replaced", ids, snapshot_date)
    else:  # nothing to add and nothing to replace: no empty commit
        log.info("bronze: %s %s written (every row read); nothing quarantined", ids, snapshot_date)
    if run.quality:
        run.quality_entries.extend(field_quality(tagged, cfgs, run.settings.quality_top_values))


# -- 4. hold, 2. MERGE with its record --------------------------------------------------------


def hold_reason(run: Run, cfg: SourceConfig, o: SnapshotOutcome, diff: SnapshotDiff | None) -> str | None:
    """Why this snapshot looks destructive, every reason that applies (None when none does).
    ``diff``: what its MERGE would do (None: the table holds no lead of the source yet)."""
    rules = run.settings.hold_rules(cfg)
    previous = run.applied.previous(cfg.id)
    reasons = []
    floor = rules.min_rows_ratio * previous.rows_read if rules.min_rows_ratio and previous and previous.rows_read else 0
    if o.rows_read < floor:
        reasons.append(
            f"has {o.rows_read} row(s), fewer than {rules.min_rows_ratio:.0%} of the {previous.rows_read} "
            f"of the applied snapshot {previous.snapshot_date}"
        )
    if rules.max_removed_share is not None and diff is not None:
        active, removed = diff.active_before(o.rows_loaded), diff.counts["removed"]
        if active and removed / active > rules.max_removed_share:
            reasons.append(
                f"would mark {removed} of {active} active lead(s) removed ({removed / active:.1%}, more than "
                f"{rules.max_removed_share:.0%})"
            )
    return " and ".join(reasons) or None


def merge_one(run: Run, cfg: SourceConfig, o: SnapshotOutcome, valid: DataFrame, files: list[SnapshotFile]) -> None:
    """Hold-check, then MERGE one source's valid rows with the commit's record of what it applies."""
    sid, d = cfg.id, o.snapshot_date
    o.rules_version = cfg.rules_version()
    if not hold_lock(run) and _replanned(run, o, files):
        return
    if o.rows_loaded == 0:
        o.status = FAILED
        o.message = f"{sid} {d}: no valid row; not merged (a full-refresh MERGE of nothing would remove every lead)"
        return
    diff = None
    if sid in run.applied.latest and table_exists(run.spark, run.wh.leads):  # else it has no lead yet
        with run.state.timed("merge"):  # what the MERGE will do: counted for the hold check, then applied
            diff = diff_snapshot(run.spark, run.wh.leads, valid, sid)
    try:
        _hold_and_merge(run, cfg, o, valid, files, diff)
    finally:
        if diff is not None:
            diff.release()


def _hold_and_merge(
    run: Run,
    cfg: SourceConfig,
    o: SnapshotOutcome,
    valid: DataFrame,
    files: list[SnapshotFile],
    diff: SnapshotDiff | None,
) -> None:
    sid, d = cfg.id, o.snapshot_date
    with run.state.timed("hold"):
        why = hold_reason(run, cfg, o, diff)
    forced = why is not None and sid in run.apply_held
    if why is not None and not forced:
        o.status = HELD
        o.message = (
            f"{sid} {d} held: the snapshot {why}. Its rows are in bronze; nothing was merged. Check the file "
            f"({', '.join(f.name for f in files)}); to apply it on purpose, re-run with --apply-held {sid}."
        )
        log.warning("hold: %s", o.message)
        return
    if forced:
        run.forced.add(sid)
        log.warning("hold: %s %s %s; applied on purpose (--apply-held %s)", sid, d, why, sid)
    metadata = {
        "rules_version": o.rules_version,
        "files": [{"name": f.name, "uri": f.uri, "size": f.size, "checksum": f.checksum} for f in files],
        "rows_read": o.rows_read,
        "rows_loaded": o.rows_loaded,
        "rows_rejected": o.rows_rejected,
        "applied_on_purpose": forced,
    }
    if not hold_lock(run) and _replanned(run, o, files):
        return
    previous = run.applied.previous(sid)
    with run.state.timed("merge"):
        result = merge_source_snapshot(
            run.spark,
            run.wh.leads,
            valid,
            sid,
            d,
            run.state.run_id,
            metadata,
            run.settings.delta_commit_attempts,
            first=sid not in run.applied.latest,  # the table holds no lead of it: insert clause only
            diff=diff,
        )
    if result.skipped:  # another writer applied this or a newer snapshot between the plan and the commit
        run.applied = read_applied_state(run.spark, run.wh.leads)
        if not _replanned(run, o, files):
            o.status, o.message = (
                FAILED,
                f"{sid} {d}: Delta refused the MERGE as already applied; see the table history",
            )
        return
    o.status = APPLIED
    o.leads_version = result.version
    for kind, n in result.counts.items():
        setattr(o, kind, n)
    notes = []
    if forced:
        notes.append(f"{sid} {d}: applied on purpose although it {why}")
    if previous is not None and previous.rules_version and previous.rules_version != o.rules_version:
        o.rules_changed_from = previous.rules_version
        notes.append(
            f"{sid}: rules changed ({previous.rules_version} -> {o.rules_version}): {o.restandardized} lead(s) "
            "re-standardized with unchanged agency values (counted as restandardized, not changed)"
        )
    o.message = "; ".join(notes) or None
    run.applied.latest[sid] = d
    run.applied.applied[(sid, d)] = AppliedSnapshot(
        sid,
        d,
        result.version,
        run.state.run_id,
        o.rules_version,
        tuple((f.name, f.size, f.checksum) for f in files),
        rows_read=o.rows_read,
    )
    faults.reach("after_merge")


def _replanned(run: Run, o: SnapshotOutcome, files: list[SnapshotFile]) -> bool:
    """Plan (source, snapshot) again from the re-read state; True (with the outcome's new status)
    when it must no longer be merged."""
    again = plan(run, o.source, o.snapshot_date, files)
    if not again.status:
        return False
    o.status = again.status
    o.message = again.message or f"{o.source} {o.snapshot_date}: another run applied it meanwhile; not merged"
    return True


# -- 5. deliver, archive ---------------------------------------------------------------------


def deliver_backlog(run: Run) -> None:
    if run.db is None or not table_exists(run.spark, run.wh.leads):
        return
    try:
        hold_lock(run)
        d = deliver(
            run.spark,
            run.wh.leads,
            run.db,
            run.state.run_id,
            schema=run.settings.postgres.schema_,
            table=run.settings.postgres.leads_table,
            batch_size=run.settings.jdbc_batch_size,
            method=run.settings.delivery_method,
        )
    except Exception as exc:
        log.error("deliver: failed: %s", _first_line(exc))
        run.state.fail(
            f"delivery failed ({type(exc).__name__}: {_first_line(exc)}); the MERGE commits stay, and the next run "
            "delivers every version not in the ledger"
        )
        return
    run.state.delivered = d.delivered
    run.state.delivered_versions = list(d.versions) if d.versions else None


ARCHIVED_STATUSES = (APPLIED, ALREADY_APPLIED, STALE)


def archive_processed(run: Run) -> None:
    """After a delivery that succeeded: move every file whose snapshot is in the leads table (or
    was quarantined as stale) to the archive; held, failed, rejected and unmatched files stay."""
    if run.archive is None or run.db is None or run.found is None or run.state.status == "failed":
        return
    status = {(o.source, o.snapshot_date): o.status for o in run.state.snapshots}
    done = [
        f
        for f in run.found.files
        if status.get((f.source_id, f.snapshot_date)) in ARCHIVED_STATUSES and f.uri not in run.rejections
    ]
    if not done:
        return
    result = archive_files(run.spark, done, run.state.input, run.archive)
    for f, target in zip(done, result.targets, strict=True):
        if target is not None:
            run.archived[f.uri] = target
    run.state.archived = len(run.archived)
    run.state.errors.extend(result.conflicts)
    run.state.warnings.extend(f"{m}; the next run moves it" for m in result.failed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
