"""Deliver: net-new leads from the Delta change feed to PostgreSQL, exactly once.

What is delivered is what the MERGE commits inserted (``_change_type = 'insert'`` in the change
feed). PostgreSQL keeps a ledger, ``lead_deliveries (table_id, version)``, of the Delta versions
already delivered. Each run delivers every version after the last one in the ledger up to the
table's current version: normally just this run's MERGE commits, and after a run that was killed
between its MERGE and its delivery, that run's commits too. So a kill at any point loses nothing,
and a re-run delivers nothing twice:

By default (settings ``delivery_method: direct``) the inserts are written once, straight into
the leads table, inside the delivery transaction:

1. one PostgreSQL transaction, serialized per Delta table by an advisory lock, streams the
   inserts through the driver into ``COPY <leads table> FROM STDIN (FORMAT csv)`` (each lead
   rendered as a CSV line by Spark's ``to_csv`` in the JVM; one Spark partition at a time on
   the driver, at most two partitions of ``DIRECT_SPLIT_BYTES`` at a time, never the whole
   feed; the first is computed before the transaction opens), checks that PostgreSQL counted
   every line sent, records the versions in the ledger and adds the count to the run's
   ``pipeline_runs`` row. Either all of it commits or none: a kill before the commit leaves
   nothing behind. The connection has TCP keepalives on both ends, so a vanished driver's
   transaction (and its locks) goes within about a minute.
2. When a lead_id of the feed is already in the leads table (COPY refuses the whole transaction:
   a warehouse rebuilt beside an existing database, or rows changed by hand), the delivery falls
   back to the staged way below, which keeps those leads as they are (``ON CONFLICT DO NOTHING``).
   PostgreSQL reports the conflict when the COPY ends, so that delivery reads the feed twice.
   Any other refusal (a value PostgreSQL cannot take) fails the delivery with the COPY's row
   and column, never the value (:class:`DeliveryRefused`); nothing is committed.

The staged way (``delivery_method: copy`` or ``jdbc``, and the fallback):

1. the inserts are written from Spark's partitions (PostgreSQL COPY, or Spark's JDBC writer) to
   a private UNLOGGED staging table named ``<leads table>_stage_<table id>_<random>`` (a retried
   Spark task may write a row twice there: harmless);
2. one PostgreSQL transaction, serialized per Delta table by the same advisory lock, copies them
   with ``INSERT ... ON CONFLICT (lead_id) DO NOTHING``, records the versions in the ledger, adds
   the count to the run's ``pipeline_runs`` row and drops the staging table. Either all of it
   commits or none. A staging table left by a killed run is dropped by the next delivery of the
   same Delta table.

Every SQL identifier is composed with psycopg's ``sql.Identifier``; values are parameters.

A map column of the lead (``extras``) is ``jsonb`` in PostgreSQL (NULL when the source file had
no extra column). Neither CSV nor JDBC carries a map: every way sends it as JSON text (Spark's
``to_json``); PostgreSQL reads that text into ``jsonb`` (the direct COPY) or the publish step
casts the stage's ``text`` column to it.

``ensure_tables`` migrates a leads table made by an older version: every lead column it lacks is
added (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, NULL in the rows already delivered).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import errors, sql
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe import faults
from leadpipe.canonical import LEAD_SCHEMA
from leadpipe.merge import change_feed, table_id_and_version
from leadpipe.postgres import DbTarget
from leadpipe.run_report import ensure_views
from leadpipe.runs import RUNS_TABLE, ensure_run_table, keepalive_connect

log = logging.getLogger(__name__)

PG_TYPES = {
    T.StringType(): "text",
    T.DateType(): "date",
    T.IntegerType(): "integer",
    T.BooleanType(): "boolean",
    T.MapType(T.StringType(), T.StringType()): "jsonb",
}
#: Lead columns sent as JSON text (jsonb in PostgreSQL: the direct COPY reads the text into it, a
#: stage keeps it as text and the publish step casts it).
JSON_COLUMNS = [f.name for f in LEAD_SCHEMA.fields if isinstance(f.dataType, T.MapType)]
LEDGER = "lead_deliveries"


class StagingIncomplete(RuntimeError):
    """The staging table lacks rows that were written to it (the server lost its UNLOGGED
    contents in a crash or restart): nothing is published; the next run stages again."""


@dataclass
class Delivery:
    delivered: int
    versions: tuple[int, int] | None  # (first, last) Delta versions covered, None when up to date


def _name(schema: str, table: str) -> sql.Composed:
    return sql.Identifier(schema, table)


def leads_ddl(schema: str, table: str) -> sql.Composed:
    cols = []
    for f in LEAD_SCHEMA.fields:
        null = " NOT NULL" if f.name in ("lead_id", "source") else ""
        pk = " PRIMARY KEY" if f.name == "lead_id" else ""
        cols.append(sql.SQL("{} " + PG_TYPES[f.dataType] + null + pk).format(sql.Identifier(f.name)))
    cols.append(sql.SQL("run_id text"))
    cols.append(sql.SQL("delivered_at timestamptz NOT NULL DEFAULT now()"))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(_name(schema, table), sql.SQL(", ").join(cols))


def add_missing_lead_columns(conn, schema: str, table: str) -> list[str]:
    """Add to an existing leads table the lead columns it lacks (a table made by an older version);
    returns their names. Only a missing column takes an ALTER (and its lock)."""
    have = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ).fetchall()
    }
    missing = [f for f in LEAD_SCHEMA.fields if f.name not in have]
    if missing:
        conn.execute(
            sql.SQL("ALTER TABLE {} {}").format(
                _name(schema, table),
                sql.SQL(", ").join(
                    sql.SQL("ADD COLUMN IF NOT EXISTS {} " + PG_TYPES[f.dataType]).format(sql.Identifier(f.name))
                    for f in missing
                ),
            )
        )
        log.warning("deliver: migrated %s.%s: added column(s) %s", schema, table, [f.name for f in missing])
    return [f.name for f in missing]


def ledger_ddl(schema: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " table_id text NOT NULL, version bigint NOT NULL, first_version bigint NOT NULL,"
        " run_id text NOT NULL, leads_delivered integer NOT NULL,"
        " delivered_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_id, version))"
    ).format(_name(schema, LEDGER))


def ensure_tables(db: DbTarget, schema: str = "public", table: str = "leads") -> None:
    """Create the schema, the leads table, the ledger and ``pipeline_runs`` when absent, add the
    lead columns an older leads table lacks, and (re)create the dashboard views (run_report.py)."""
    with db.connect(autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('leadpipe-ddl'))")
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(leads_ddl(schema, table))
            add_missing_lead_columns(conn, schema, table)
            # the run's report and the views select a run's leads
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (run_id)").format(
                    sql.Identifier(f"{table}_run_id_idx"), _name(schema, table)
                )
            )
            conn.execute(ledger_ddl(schema))
            ensure_run_table(conn, schema)
            ensure_views(conn, schema, table)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('leadpipe-ddl'))")


def _max_delivered(conn, schema: str, table_id: str) -> int | None:
    row = conn.execute(
        sql.SQL("SELECT max(version) FROM {} WHERE table_id = %s").format(_name(schema, LEDGER)), (table_id,)
    ).fetchone()
    return None if row[0] is None else int(row[0])


def table_position(spark: SparkSession, path: str) -> tuple[str, int]:
    """(the Delta table's id, its current version): what the delivery ledger is keyed by."""
    return table_id_and_version(spark, path)


def inserted_leads(spark: SparkSession, path: str, first: int, last: int) -> DataFrame:
    """Leads that the commits ``first..last`` inserted, in the canonical (PostgreSQL) shape.

    Not deduplicated: the MERGE inserts a lead once in the table's life (a lead that leaves is
    kept, marked removed, and one that comes back is updated; duplicate keys of a snapshot are
    quarantined before it), so the feed holds each lead_id once. A shuffle of every wide row to
    deduplicate was most of the delivery's time. Where the table was changed by hand (rows
    deleted and inserted again), the publish step's check refuses, loudly."""
    feed = change_feed(spark, path, first, last)
    return feed.filter(F.col("_change_type") == "insert").select(*LEAD_SCHEMA.fieldNames())


def stage_prefix(table: str, table_id: str) -> str:
    return f"{table}_stage_{hashlib.sha256(table_id.encode()).hexdigest()[:8]}_"


def drop_leftover_stages(conn, schema: str, prefix: str) -> list[str]:
    """Drop staging tables of this Delta table that a killed run left behind."""
    names = [
        r[0]
        for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
        if r[0].startswith(prefix)
    ]
    for name in names:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_name(schema, name)))
    if names:
        log.warning("deliver: dropped %d staging table(s) left by an interrupted run", len(names))
    return names


def create_stage(conn, schema: str, table: str, stage: str) -> None:
    """An UNLOGGED staging table shaped like the leads table, ``lead_id`` nullable and the
    ``JSON_COLUMNS`` as text (what both stage writers send; ``_publish`` casts them)."""
    conn.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
            _name(schema, stage), _name(schema, table)
        )
    )
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN lead_id DROP NOT NULL").format(_name(schema, stage)))
    for c in JSON_COLUMNS:
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE text").format(_name(schema, stage), sql.Identifier(c))
        )


def for_stage(leads: DataFrame) -> DataFrame:
    """Leads as the stage takes them: each map column (``JSON_COLUMNS``) as its JSON text (NULL
    stays NULL), since neither the CSV of COPY nor JDBC carries a map."""
    return leads.select(*[F.to_json(F.col(c)).alias(c) if c in JSON_COLUMNS else F.col(c) for c in leads.columns])


def _staged_rows(db: DbTarget, schema: str, stage: str) -> int:
    with db.connect(autocommit=True) as conn:
        return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_name(schema, stage))).fetchone()[0])


def deliver(
    spark: SparkSession,
    leads_path: str,
    db: DbTarget,
    run_id: str,
    schema: str = "public",
    table: str = "leads",
    batch_size: int = 10000,
    method: str = "direct",
) -> Delivery:
    """Deliver the inserts of every Delta version not yet in the ledger (see the module doc).
    The tables must exist: :func:`ensure_tables`, which the run calls once when it takes its lock.
    ``method``: ``direct`` (COPY into the leads table inside the delivery transaction; staged
    when a lead is already there), or how a staging table is filled: ``copy`` (PostgreSQL COPY
    from each partition) or ``jdbc`` (Spark's JDBC writer, batches of ``batch_size``); the
    publish step of a stage is the same for both. :class:`DeliveryCancelled` when PostgreSQL
    cancels one of its statements (a ``statement_timeout``: see ``DbTarget.statement_timeout``)."""
    if method not in METHODS:
        raise ValueError(f"delivery method {method!r}: one of {sorted(METHODS)}")
    try:
        return _deliver(spark, leads_path, db, run_id, schema, table, batch_size, method)
    except Exception as exc:  # the driver's statements (psycopg) or a staging task's (Spark, JDBC)
        cancelled = CANCELLED.search(str(exc))
        if not isinstance(exc, errors.QueryCanceled) and not cancelled:
            raise
        bound = (
            "the server's statement_timeout"
            if db.statement_timeout is None
            else (f"statement_timeout {db.statement_timeout}" + (" (none)" if db.statement_timeout == "0" else ""))
        )
        raise DeliveryCancelled(
            f"PostgreSQL cancelled a statement of the delivery into {schema}.{table} "
            f"({cancelled.group(0) if cancelled else type(exc).__name__}); nothing was committed. This job's "
            f"sessions use {bound}: postgres.statement_timeout in settings.yaml (0: none)"
        ) from None


#: PostgreSQL's message for a cancelled statement (SQLSTATE 57014), as psycopg, pgJDBC and a
#: Spark task's error carry it.
CANCELLED = re.compile(r"canceling statement due to [a-z ]+")


class DeliveryCancelled(RuntimeError):
    """PostgreSQL cancelled a delivery statement (``statement_timeout``, or by hand): nothing was
    committed; the next run delivers the same versions."""


def _deliver(
    spark: SparkSession,
    leads_path: str,
    db: DbTarget,
    run_id: str,
    schema: str,
    table: str,
    batch_size: int,
    method: str,
) -> Delivery:
    table_id, current = table_position(spark, leads_path)
    prefix = stage_prefix(table, table_id)
    with db.connect(autocommit=True) as conn:
        drop_leftover_stages(conn, schema, prefix)
        done = _max_delivered(conn, schema, table_id)
    first = 0 if done is None else done + 1
    if first > current:
        log.info("deliver: %s is delivered up to version %d; nothing new", db, current)
        return Delivery(0, None)
    leads = inserted_leads(spark, leads_path, first, current).withColumn("run_id", F.lit(run_id))
    if method == "direct":
        try:
            delivered = _deliver_direct(leads, db, schema, table, table_id, first, current, run_id)
        except errors.UniqueViolation as exc:
            log.warning(
                "deliver: a lead of versions %d..%d is already in %s.%s (constraint %s); nothing was committed: "
                "delivering through a staging table instead (INSERT ... ON CONFLICT DO NOTHING)",
                first,
                current,
                schema,
                table,
                exc.diag.constraint_name,
            )
            method = "copy"
        else:
            faults.reach("after_pg_commit")
            log.info(
                "deliver: versions %d..%d of %s: %d lead(s) copied straight into %s.%s",
                first,
                current,
                leads_path,
                delivered,
                schema,
                table,
            )
            return Delivery(delivered, (first, current))
    stage = prefix + uuid.uuid4().hex[:12]
    with db.connect(autocommit=True) as conn:
        create_stage(conn, schema, table, stage)
    dying = faults.armed("during_staging")
    if dying:  # a real death while Spark's tasks are writing the stage: as soon as a row has landed
        faults.watch("during_staging", lambda: _staged_rows(db, schema, stage) > 0)
    parts = max(1, min(4, spark.sparkContext.defaultParallelism))
    if method == "copy":  # one pass over the change feed: the COPYs say how many rows they wrote
        staged = _stage_by_copy(leads.coalesce(parts), db, schema, stage, batch_size)
    else:  # Spark's JDBC writer says nothing: count first, from a copy on disk (the feed is read once)
        leads = leads.persist(StorageLevel.DISK_ONLY)
        try:
            staged = leads.count()
            if staged:
                STAGE_WRITERS[method](leads.coalesce(parts), db, schema, stage, batch_size)
        finally:
            leads.unpersist()
    if dying:  # the write finished before the watcher saw a row: still nothing published
        faults.die("during_staging")
    delivered = _publish(db, schema, table, stage, table_id, first, current, run_id, staged)
    faults.reach("after_pg_commit")
    log.info(
        "deliver: versions %d..%d of %s: %d inserted lead(s) staged by %s, %d delivered to %s.%s",
        first,
        current,
        leads_path,
        staged,
        method,
        delivered,
        schema,
        table,
    )
    return Delivery(delivered, (first, current))


#: How Spark's ``to_csv`` writes a lead for PostgreSQL's CSV format: NULL as an unquoted empty
#: field, an empty string as ``""``, quotes doubled, fields with a separator, quote or line break
#: quoted, white space kept, dates ``yyyy-MM-dd``.
PG_CSV = {
    "sep": ",",
    "quote": '"',
    "escape": '"',
    "nullValue": "",
    "emptyValue": '""',
    "lineSep": "\n",
    "dateFormat": "yyyy-MM-dd",
    "ignoreLeadingWhiteSpace": "false",
    "ignoreTrailingWhiteSpace": "false",
}
#: The largest Parquet split the direct delivery reads as one partition: the driver holds at most
#: two partitions' lines (about 4x this in CSV), whatever the rows, well under
#: ``spark.driver.maxResultSize`` (1g by default).
DIRECT_SPLIT_BYTES = 64 * 1024 * 1024


def csv_lines(leads: DataFrame) -> DataFrame:
    """One column, ``line``: each lead as a line of PostgreSQL's CSV (``PG_CSV``, ending in a line
    feed), its columns in ``for_stage(leads).columns`` order; rendered in the JVM."""
    staged = for_stage(leads)
    return staged.select(F.concat(F.to_csv(F.struct(*staged.columns), PG_CSV), F.lit("\n")).alias("line"))


@contextmanager
def streamed_lines(leads: DataFrame) -> Iterator[Iterator[str]]:
    """The CSV lines of ``leads`` (:func:`csv_lines`) on the driver, one Spark partition at a
    time (the next one computed meanwhile; file splits of at most ``DIRECT_SPLIT_BYTES``); the
    first partition is computed on entry, before the caller opens its transaction."""
    conf = leads.sparkSession.conf
    key = "spark.sql.files.maxPartitionBytes"
    before = conf.get(key)
    current = leads.sparkSession._jsparkSession.sessionState().conf().filesMaxPartitionBytes()  # in bytes
    conf.set(key, str(min(DIRECT_SPLIT_BYTES, int(current))))
    try:  # the splits are planned here, when the iterator is made
        rows = csv_lines(leads).toLocalIterator(prefetchPartitions=True)
    finally:
        conf.set(key, before)
    with closing(rows):
        first = next(rows, None)
        yield itertools.chain([] if first is None else [first[0]], (r[0] for r in rows))


def copy_lines(
    cur, lines: Iterable[str], columns: list[str], schema: str, table: str, lines_per_write: int = 5000
) -> int:
    """``COPY schema.table (columns) FROM STDIN (FORMAT csv)`` on ``cur`` (in the caller's
    transaction) of ``lines``; returns the rows sent, after checking that PostgreSQL counted as
    many."""
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        _name(schema, table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    sent = 0
    cur.execute("SET LOCAL client_encoding TO 'UTF8'")
    with cur.copy(copy) as out:
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            if len(buffer) == lines_per_write:
                out.write("".join(buffer))
                sent += len(buffer)
                buffer = []
        if buffer:
            out.write("".join(buffer))
            sent += len(buffer)
    if cur.rowcount != sent:
        raise RuntimeError(f"COPY into {schema}.{table}: PostgreSQL counted {cur.rowcount} row(s) of the {sent} sent")
    return sent


def copy_through_driver(cur, leads: DataFrame, schema: str, table: str, lines_per_write: int = 5000) -> int:
    """:func:`copy_lines` of every row of ``leads``, streamed by :func:`streamed_lines`."""
    with streamed_lines(leads) as lines:
        return copy_lines(cur, lines, for_stage(leads).columns, schema, table, lines_per_write)


class DeliveryRefused(RuntimeError):
    """PostgreSQL refused the direct COPY's rows (other than a lead already there): nothing was
    committed. The message names the row and column, never the value."""


def _deliver_direct(
    leads: DataFrame,
    db: DbTarget,
    schema: str,
    table: str,
    table_id: str,
    first: int,
    last: int,
    run_id: str,
) -> int:
    """The direct delivery's one transaction (see the module doc). Raises psycopg's
    ``UniqueViolation`` (nothing committed) when a lead_id is already in the table, and
    :class:`DeliveryRefused` for any other refusal of the rows."""
    with streamed_lines(leads) as lines:
        try:
            with keepalive_connect(db) as conn, conn.transaction():  # a vanished driver frees its locks
                if not _lock_and_check(conn, schema, table_id, last):
                    return 0
                with conn.cursor() as cur:
                    delivered = copy_lines(cur, lines, for_stage(leads).columns, schema, table)
                if faults.armed("before_pg_commit"):
                    log.warning(NOT_COMMITTED, delivered, schema, table)
                    faults.die("before_pg_commit")
                _record(conn, schema, table_id, first, last, run_id, delivered)
        except (errors.UniqueViolation, psycopg.OperationalError):
            raise  # a lead already there (the caller stages), or the server went away: no row to name
        except psycopg.DatabaseError as exc:
            where = re.search(r"\bline (\d+)(?:, column (\w+))?", exc.diag.context or "")
            at = f" at row {where.group(1)} of the COPY" if where else ""
            at += f", column {where.group(2)}" if where and where.group(2) else ""
            raise DeliveryRefused(
                f"PostgreSQL refused the COPY into {schema}.{table}: {type(exc).__name__} "
                f"(SQLSTATE {exc.sqlstate}){at}; nothing was committed"
            ) from None
    return delivered


NOT_COMMITTED = "deliver: PostgreSQL holds %d row(s) of the COPY into %s.%s in an open transaction, none committed"


def _stage_by_jdbc(leads: DataFrame, db: DbTarget, schema: str, stage: str, batch_size: int) -> None:
    (
        for_stage(leads)
        .write.mode("append")
        .option("batchsize", batch_size)
        # both names match settings' strict identifier pattern (config.SQL_IDENTIFIER)
        .jdbc(db.jdbc_url, f'"{schema}"."{stage}"', properties=db.jdbc_properties())
    )


def _stage_by_copy(leads: DataFrame, db: DbTarget, schema: str, stage: str, batch_size: int) -> int:
    """Each partition streams its rows into the stage with one ``COPY ... FROM STDIN (FORMAT csv)``
    on its own connection (one transaction), and returns the rows the partitions wrote: Arrow
    batches rendered to CSV by pyarrow (C++), no per-row Python. NULL is an unquoted empty field
    and an empty string a quoted one, as COPY reads them. A retried task's rows are counted once
    (Spark keeps one attempt's result per partition); the stage may hold them twice, which the
    publish step's distinct count and ON CONFLICT absorb. Map columns go as JSON text (``for_stage``)."""
    leads = for_stage(leads)
    columns = leads.columns
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        _name(schema, stage), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )

    def write(batches):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        rows = 0
        with db.connect() as conn, conn.cursor() as cur:
            cur.execute("SET client_encoding TO 'UTF8'")  # pyarrow writes UTF-8, whatever the server's default
            with cur.copy(copy) as out:
                for batch in batches:
                    sink = pa.BufferOutputStream()
                    pacsv.write_csv(batch, sink, write_options=options)
                    out.write(sink.getvalue())
                    rows += batch.num_rows
        yield pa.RecordBatch.from_pydict({"rows": [rows]})

    written = int(leads.mapInArrow(write, "rows long").agg(F.sum("rows")).first()[0] or 0)
    log.info("deliver: %d row(s) copied into the stage", written)
    return written


STAGE_WRITERS = {"copy": _stage_by_copy, "jdbc": _stage_by_jdbc}
#: Every ``delivery_method``: straight into the leads table, or through a stage filled by one of ``STAGE_WRITERS``.
METHODS = ("direct", *STAGE_WRITERS)


def _publish(
    db: DbTarget, schema: str, table: str, stage: str, table_id: str, first: int, last: int, run_id: str, staged: int
) -> int:
    """The one delivery transaction (see the module doc). ``staged``: the rows written to the
    stage, one attempt per Spark task, each lead once (the feed holds a lead_id once: see
    ``inserted_leads``). Each task's write is all or nothing, so the stage holds every lead
    exactly when its distinct lead_ids number ``staged``; fewer (an UNLOGGED table is emptied by
    a server crash) aborts the transaction. A row count could not tell: a retried task's rows,
    there twice, could hide another task's rows lost in a crash."""
    names = [*LEAD_SCHEMA.fieldNames(), "run_id"]
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in names)
    values = sql.SQL(", ").join(
        sql.SQL("{}::jsonb").format(sql.Identifier(c)) if c in JSON_COLUMNS else sql.Identifier(c) for c in names
    )
    with db.connect() as conn, conn.transaction():
        if not _lock_and_check(conn, schema, table_id, last):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_name(schema, stage)))
            return 0
        query = sql.SQL("SELECT count(DISTINCT lead_id) FROM {}").format(_name(schema, stage))
        found = conn.execute(query).fetchone()[0]
        if found != staged:
            raise StagingIncomplete(
                f"staging table {schema}.{stage} holds {found} distinct lead(s) of the {staged} row(s) written to it "
                "(was the server restarted? or does the leads table's change feed insert a lead_id twice, after "
                "rows were deleted and inserted by hand?); nothing published: the next run stages them again"
            )
        cur = conn.execute(
            sql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} WHERE lead_id IS NOT NULL ON CONFLICT (lead_id) DO NOTHING"
            ).format(_name(schema, table), cols, values, _name(schema, stage))
        )
        delivered = cur.rowcount
        _record(conn, schema, table_id, first, last, run_id, delivered)
        conn.execute(sql.SQL("DROP TABLE {}").format(_name(schema, stage)))
    return delivered


def _lock_and_check(conn, schema: str, table_id: str, last: int) -> bool:
    """In the delivery transaction: take the Delta table's delivery lock; False when another run
    delivered up to ``last`` meanwhile (then there is nothing to do)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"leadpipe-deliver-{table_id}",))
    done = _max_delivered(conn, schema, table_id)
    if done is not None and done >= last:
        log.info("deliver: another run delivered up to version %d meanwhile", done)
        return False
    return True


def _record(conn, schema: str, table_id: str, first: int, last: int, run_id: str, delivered: int) -> None:
    """In the delivery transaction: the ledger row of versions ``first..last`` and the run's count."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_id, version, first_version, run_id, leads_delivered) VALUES (%s, %s, %s, %s, %s)"
        ).format(_name(schema, LEDGER)),
        (table_id, last, first, run_id, delivered),
    )
    conn.execute(
        sql.SQL("UPDATE {} SET delivered = coalesce(delivered, 0) + %s WHERE run_id = %s").format(
            _name(schema, RUNS_TABLE)
        ),
        (delivered, run_id),
    )
