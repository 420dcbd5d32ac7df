"""The run's state, typed: what happened to every (source, snapshot), per-source totals, and
the run summary that is printed as JSON on every exit and stored in ``pipeline_runs``.

Run statuses and their exit codes (``weekly_leads`` returns these):

=============  ====  ==========================================================================
succeeded       0    every snapshot found was applied or had been applied already
failed          1    the run stopped (an error, PostgreSQL unreachable, every source failed)
usage_error     2    bad arguments or configuration: nothing was started
partial         3    some sources were held or failed (see ``snapshots``); the others applied
locked          4    another run holds the warehouse's lock: nothing was started
=============  ====  ==========================================================================
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from leadpipe.merge import COUNT_KINDS

EXIT_CODES = {"succeeded": 0, "failed": 1, "usage_error": 2, "partial": 3, "locked": 4}

#: What can happen to one (source, snapshot):
APPLIED = "applied"  # merged now
ALREADY_APPLIED = "already_applied"  # the leads table holds it (same files): skipped before reading
STALE = "stale"  # older than the source's applied snapshot and never applied: quarantined, not merged
HELD = "held"  # destructive-looking: not merged, rows kept in bronze, waits for an operator
FAILED = "failed"  # could not be read or merged
CHANGED_AFTER_APPLY = "changed_after_apply"  # applied before with other bytes: reported, not merged
NEEDS_ATTENTION = (HELD, FAILED, CHANGED_AFTER_APPLY)

#: What can happen to one input file, besides its snapshot's status above:
REJECTED = "rejected"  # not read: see its reason code (sniff.py, discover.py)
UNMATCHED = "unmatched"  # no source's file_pattern matches its name: not read
NOT_REACHED = "not_reached"  # the run stopped before its snapshot


@dataclass(kw_only=True)
class Counts:
    """Rows and changes: of one snapshot, or added up over a source's snapshots."""

    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    new: int = 0
    changed: int = 0
    returned: int = 0
    restandardized: int = 0
    removed: int = 0
    unchanged: int = 0

    def add_counts(self, other: Counts) -> None:
        for name in ("rows_read", "rows_loaded", "rows_rejected", *COUNT_KINDS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.rejected_by_reason.items():
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + n


@dataclass
class SnapshotOutcome(Counts):
    """One source's snapshot in this run."""

    source: str
    snapshot_date: date
    files: list[str]
    status: str = ""
    leads_version: int | None = None
    rules_version: str | None = None
    rules_changed_from: str | None = None
    message: str | None = None


@dataclass
class FileOutcome:
    """One input file: what happened to it. Every file listed in the input gets exactly one.

    ``status`` is its snapshot's status (applied, already_applied, held, failed, stale,
    changed_after_apply), or ``rejected`` with a ``reason`` code, or ``unmatched``.
    """

    file: str
    name: str
    size: int
    status: str
    source: str | None = None
    snapshot_date: date | None = None
    reason: str | None = None
    message: str | None = None
    records: int | None = None  # of a rejected file, where countable
    encoding: str | None = None
    delimiter: str | None = None
    renamed_columns: dict[str, str] = field(default_factory=dict)
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    archived_to: str | None = None  # where the run moved it (archive.py)


@dataclass
class SourceTotals(Counts):
    """All snapshots of one source in this run, added up."""

    files: int = 0
    snapshots: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # snapshot date -> status

    def add(self, o: SnapshotOutcome) -> None:
        self.files += len(o.files)
        self.add_counts(o)
        self.snapshots.append(o.snapshot_date.isoformat())
        self.statuses[o.snapshot_date.isoformat()] = o.status


@dataclass
class RunSummary:
    run_id: str
    input: str = ""
    warehouse: str = ""
    status: str = "running"
    started_at: str = field(default_factory=lambda: _now())
    finished_at: str | None = None
    sources: dict[str, SourceTotals] = field(default_factory=dict)
    snapshots: list[SnapshotOutcome] = field(default_factory=list)
    delivered: int = 0
    delivered_versions: list[int] | None = None
    unmatched_files: list[str] = field(default_factory=list)
    files: list[FileOutcome] = field(default_factory=list)  # every input file, once
    rejected_files: dict[str, int] = field(default_factory=dict)  # reason -> files
    missing_sources: list[str] = field(default_factory=list)  # expected (settings) but absent
    archived: int = 0  # input files moved to the archive by this run
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    report: dict[str, str] | None = None  # {"html": path, "csv": path} of the run's report
    timings: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds, summed over snapshots

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Add the wall time of the block to ``timings[stage]``."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.monotonic() - start, 3)

    def record(self, outcome: SnapshotOutcome) -> None:
        self.snapshots.append(outcome)
        self.sources.setdefault(outcome.source, SourceTotals()).add(outcome)
        if outcome.status in NEEDS_ATTENTION and outcome.message:
            self.errors.append(outcome.message)
        elif outcome.message:
            self.warnings.append(outcome.message)

    def finish(self, status: str | None = None) -> RunSummary:
        """Set the final status (derived from the outcomes unless given) and the end time."""
        if status is None:
            every_source_failed = bool(self.snapshots) and all(o.status == FAILED for o in self.snapshots)
            if self.status == "failed" or every_source_failed:
                status = "failed"
            elif any(o.status in NEEDS_ATTENTION for o in self.snapshots) or self.rejected_files:
                status = "partial"
            else:
                status = "succeeded"
        self.status = status
        self.finished_at = _now()
        return self

    def fail(self, message: str) -> None:
        self.errors.append(message)
        self.status = "failed"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sources"] = {k: asdict(v) for k, v in sorted(self.sources.items())}
        return d

    def to_json(self) -> str:
        """The one JSON rendering (the last line of standard output, ``pipeline_runs.summary``)."""
        return json.dumps(self.to_dict(), default=str)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
