"""``make bench``'s backfill: one run of the job over a year of weekly snapshots.

``generate_weeks`` writes ``weeks`` snapshots of ``rows`` rows each (the three real layouts, about
2 % of each source's providers removed, changed and added every week) into one folder; the job
is started on that folder exactly as the README starts it, against a fresh warehouse and a fresh
embedded PostgreSQL, and measured like the weekly runs (``bench.measure``: wall, peak memory,
CPU). From the job's ``progress:`` lines (one per snapshot date) come the seconds each snapshot
took, so the table shows whether a snapshot costs more as the table's history grows. The
summary's rows read, new and removed counts are checked against what the generator wrote: any
difference is an error of the measurement.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("leadpipe.bench")

PROGRESS = re.compile(r"progress: snapshot (\d+)/(\d+) \(([\d-]+)\): (.*?); (\d+) row\(s\) read; ([\d.]+) s elapsed")


@dataclass
class BackfillResult:
    rows: int  # per weekly snapshot
    weeks: int
    measured_at: str
    machine: dict[str, Any] = field(default_factory=dict)
    commit: str | None = None  # the code measured
    data_folder: str = ""
    data_bytes: int = 0
    generation_s: float | None = None
    expected: dict[str, int] = field(default_factory=dict)  # generator: rows, new, removed over all weeks
    process: dict[str, Any] | None = None  # bench.ProcessRun as a dict
    status: str | None = None
    rows_read: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    delivered: int = 0
    applied: int = 0  # (source, snapshot) MERGEs
    timings: dict[str, float] = field(default_factory=dict)
    per_snapshot_s: list[float] = field(default_factory=list)  # seconds of each snapshot date, in order
    errors: list[str] = field(default_factory=list)


def snapshot_seconds(log_text: str) -> list[float]:
    """Seconds each snapshot date took, from the job's ``progress:`` lines (differences of their
    elapsed seconds; a line seen twice counts once)."""
    elapsed: dict[int, float] = {}
    for m in PROGRESS.finditer(log_text):
        elapsed.setdefault(int(m.group(1)), float(m.group(6)))
    ordered = [elapsed[i] for i in sorted(elapsed)]
    return [round(b - a, 1) for a, b in zip([0.0, *ordered], ordered, strict=False)]


def run_backfill(out: Path, rows: int, weeks: int, machine: dict[str, Any] | None = None) -> BackfillResult:
    """Generate (or reuse) the weeks, run the job once over them, and say what it did; every
    difference from what the generator wrote, and a run that did not succeed, is in ``errors``."""
    from leadpipe.bench import PROJECT_DIR, _postmaster_pid, _rel, code_commit, fresh_dir, fresh_postgres, run_job
    from leadpipe.sample import generate_weeks

    result = BackfillResult(rows, weeks, datetime.now(UTC).isoformat(timespec="seconds"), machine or {}, code_commit())
    folder = out / "data" / f"backfill-{weeks}x{rows}"
    manifest = folder / "weeks.json"
    if manifest.exists():
        counts = json.loads(manifest.read_text())
        log.info("backfill data: reusing %s", _rel(folder))
    else:
        fresh_dir(folder)
        log.info(
            "backfill data: generating %d weeks of %d rows in %s (not part of any figure)", weeks, rows, _rel(folder)
        )
        t = time.monotonic()
        counts = generate_weeks(folder, rows, weeks)
        result.generation_s = round(time.monotonic() - t, 1)
    result.data_folder = _rel(folder)
    result.data_bytes = sum(p.stat().st_size for p in folder.glob("*.csv"))
    per_week = [list(w) for w in zip(*counts["sources"].values(), strict=True)]  # week -> sources
    result.expected = {
        "rows": sum(s["rows"] for w in per_week for s in w),
        "new": sum(s["rows"] for s in per_week[0]) + sum(s["new"] for w in per_week[1:] for s in w),
        "removed": sum(s["removed"] for w in per_week for s in w),
    }
    pg_dir = out / "pg-backfill"
    server = fresh_postgres(pg_dir)
    warehouse = fresh_dir(out / "wh-backfill")
    target = server.start()
    try:  # the job exactly as a weekly run is started and read (bench.run_job), over all the weeks
        job = run_job(f"backfill-{weeks}w", folder, warehouse, str(target), out / "logs", rows, _postmaster_pid(pg_dir))
    finally:
        server.stop()
    proc = job.process
    result.process = asdict(proc)
    result.status = job.status
    result.rows_read, result.new, result.changed, result.removed = job.rows_read, job.new, job.changed, job.removed
    result.delivered, result.timings, result.errors = job.delivered, job.timings, list(job.errors)
    result.applied = sum(1 for s in job.snapshot_statuses if s.endswith(": applied"))
    root = PROJECT_DIR
    text = ""
    for name in (proc.stdout_log, proc.stderr_log):  # spark-submit's Python runner merges stderr into stdout
        path = Path(name) if Path(name).is_absolute() else root / name
        text += path.read_text(errors="replace") if path.exists() else ""
    result.per_snapshot_s = snapshot_seconds(text)
    if len(result.per_snapshot_s) != weeks:
        result.errors.append(f"{len(result.per_snapshot_s)} progress line(s) in the job's log, {weeks} expected")
    if result.status != "succeeded":
        result.errors.append(f"the run's status is {result.status!r}, not 'succeeded'")
    if result.applied != weeks * len(counts["sources"]):
        result.errors.append(
            f"{result.applied} (source, snapshot) MERGEs applied, {weeks * len(counts['sources'])} expected"
        )
    for name in ("rows_read", "new", "removed"):
        want = result.expected["rows" if name == "rows_read" else name]
        if getattr(result, name) != want:
            result.errors.append(f"{name} {getattr(result, name):,}, the generator wrote {want:,}")
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def backfill_markdown(entry: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md section of one backfill measurement (``BackfillResult`` as a dict)."""
    p = entry.get("process") or {}
    per = entry.get("per_snapshot_s") or []
    weeks, rows = entry["weeks"], entry["rows"]
    wall = p.get("wall_s")
    lines = [
        f"## Backfill: {weeks} weekly snapshots of {rows:,} rows in one run",
        "",
        f"Measured {entry['measured_at']}"
        + (f" at commit {entry['commit']}" if entry.get("commit") else "")
        + f". Data: `{entry['data_folder']}` ({entry['data_bytes'] / 1024 / 1024:,.0f} MB, "
        f"{weeks * 3} files; `leadpipe.sample.generate_weeks`: every week about 2 % of each source's providers "
        "removed for good, 2 % changed, 2 % new). One `spark-submit jobs/weekly_leads.py --input <that folder>` "
        "against a fresh warehouse and a fresh embedded PostgreSQL, measured like the weekly runs.",
        "",
        "The machine is the one in Machine above unless results.json says otherwise "
        f"({(entry.get('machine') or {}).get('cpu', '?')}, {(entry.get('machine') or {}).get('cpus_usable', '?')} CPUs).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| exit / status | {p.get('exit_code')} / {entry.get('status')} |",
        f"| wall, s | {_fmt(wall)} |",
        f"| (source, snapshot) MERGEs applied | {entry.get('applied')} of {weeks * 3} |",
        f"| rows read | {entry.get('rows_read', 0):,} (generator: {entry['expected'].get('rows', 0):,}) |",
        f"| rows read / wall s | {_fmt(entry.get('rows_read', 0) / wall if wall else None, 0)} |",
        f"| new | {entry.get('new', 0):,} (generator: {entry['expected'].get('new', 0):,}) |",
        f"| removed | {entry.get('removed', 0):,} (generator: {entry['expected'].get('removed', 0):,}) |",
        f"| changed | {entry.get('changed', 0):,} |",
        f"| delivered to PostgreSQL | {entry.get('delivered', 0):,} |",
    ]
    if per:
        later = per[1:] or per
        lines += [
            f"| seconds per snapshot date: first | {_fmt(per[0])} |",
            f"| seconds per snapshot date: median of the others | {_fmt(statistics.median(later))} |",
            f"| seconds per snapshot date: slowest | {_fmt(max(per))} |",
        ]
        if len(per) >= 21:  # does a snapshot cost more as the table's history grows?
            early, late = statistics.mean(per[1:11]), statistics.mean(per[-10:])
            lines.append(
                f"| seconds per snapshot date: mean of weeks 2-11 / of the last 10 | {_fmt(early)} / {_fmt(late)} |"
            )
    peak = p.get("peak_tree_rss_mb")
    single = p.get("peak_single_rss_mb")
    lines += [
        f"| peak RSS, process tree / largest process | {_fmt(peak / 1024 if peak else None, 2)} GB / "
        f"{_fmt(single / 1024 if single else None, 2)} GB ({p.get('peak_single_process') or '-'}) |",
        f"| driver JVM launched with -Xmx | {p.get('jvm_heap') or '-'} |",
        f"| other processes on the machine, cores busy | {_fmt(p.get('other_cpu_cores'), 2)} |",
    ]
    for stage, seconds in (entry.get("timings") or {}).items():
        lines.append(f"| stage {stage}, s (summed over snapshots) | {_fmt(seconds)} |")
    for e in entry.get("errors") or []:
        lines.append(f"| error | {e} |")
    return [*lines, ""]
