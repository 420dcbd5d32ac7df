"""Deliver: net-new leads from the Delta change feed to PostgreSQL, exactly once.

What is delivered is what the MERGE commits inserted (``_change_type = 'insert'`` in the change
feed). PostgreSQL keeps a ledger, ``lead_deliveries (table_id, version)``, of the Delta versions
already delivered. Each run delivers every version after the last one in the ledger up to the
table's current version: normally just this run's MERGE commit, and after a run that was killed
between its MERGE and its delivery, that run's commit too. So a kill at any point loses nothing,
and a re-run delivers nothing twice:

1. the inserts are written by Spark JDBC to a private UNLOGGED staging table (a retried Spark
   task may write a row twice there: harmless);
2. one PostgreSQL transaction, serialized per Delta table by an advisory lock, copies them with
   ``INSERT ... ON CONFLICT (lead_id) DO NOTHING``, records the version in the ledger and drops
   the staging table. Either all of it commits or none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import LEAD_SCHEMA
from leadpipe.merge import change_feed
from leadpipe.postgres import DbTarget

log = logging.getLogger(__name__)

PG_TYPES = {
    T.StringType(): "text",
    T.DateType(): "date",
    T.IntegerType(): "integer",
    T.BooleanType(): "boolean",
}


@dataclass
class Delivery:
    delivered: int
    versions: tuple[int, int] | None  # (first, last) Delta versions covered, None when up to date
    staged: int = 0


def leads_ddl(schema: str, table: str) -> str:
    cols = []
    for f in LEAD_SCHEMA.fields:
        null = " NOT NULL" if f.name in ("lead_id", "source") else ""
        pk = " PRIMARY KEY" if f.name == "lead_id" else ""
        cols.append(f'    "{f.name}" {PG_TYPES[f.dataType]}{null}{pk}')
    cols.append('    "run_id" text')
    cols.append('    "delivered_at" timestamptz NOT NULL DEFAULT now()')
    return f'CREATE TABLE IF NOT EXISTS "{schema}"."{table}" (\n' + ",\n".join(cols) + "\n)"


def ledger_ddl(schema: str) -> str:
    return (
        f'CREATE TABLE IF NOT EXISTS "{schema}"."lead_deliveries" (\n'
        "    table_id text NOT NULL,\n"
        "    version bigint NOT NULL,\n"
        "    first_version bigint NOT NULL,\n"
        "    run_id text NOT NULL,\n"
        "    leads_delivered integer NOT NULL,\n"
        "    delivered_at timestamptz NOT NULL DEFAULT now(),\n"
        "    PRIMARY KEY (table_id, version)\n"
        ")"
    )


def ensure_tables(db: DbTarget, schema: str = "public", table: str = "leads") -> None:
    with db.connect(autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('leadpipe-ddl'))")
        try:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(leads_ddl(schema, table))
            conn.execute(ledger_ddl(schema))
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('leadpipe-ddl'))")


def _max_delivered(conn, schema: str, table_id: str) -> int | None:
    row = conn.execute(
        f'SELECT max(version) FROM "{schema}"."lead_deliveries" WHERE table_id = %s', (table_id,)
    ).fetchone()
    return None if row[0] is None else int(row[0])


def last_delivered(db: DbTarget, table_id: str, schema: str = "public") -> int | None:
    """The newest Delta version of ``table_id`` already in PostgreSQL, None when none is."""
    with db.connect() as conn:
        return _max_delivered(conn, schema, table_id)


def inserted_leads(spark: SparkSession, path: str, first: int, last: int) -> DataFrame:
    """Leads that the commits ``first..last`` inserted, in the canonical (PostgreSQL) shape."""
    feed = change_feed(spark, path, first, last)
    return feed.filter(F.col("_change_type") == "insert").select(*LEAD_SCHEMA.fieldNames()).dropDuplicates(["lead_id"])


def deliver(
    spark: SparkSession,
    leads_path: str,
    db: DbTarget,
    run_id: str,
    schema: str = "public",
    table: str = "leads",
    batch_size: int = 10000,
) -> Delivery:
    ensure_tables(db, schema, table)
    delta = DeltaTable.forPath(spark, leads_path)
    detail = delta.detail().select("id").first()
    table_id = detail["id"]
    current = int(delta.history(1).select("version").first()["version"])
    done = last_delivered(db, table_id, schema)
    first = 0 if done is None else done + 1
    if first > current:
        log.info("deliver: %s is delivered up to version %d; nothing new", db, current)
        return Delivery(0, None)
    leads = inserted_leads(spark, leads_path, first, current).withColumn("run_id", F.lit(run_id))
    stage = f"leads_stage_{run_id.replace('-', '')[:24]}"
    with db.connect(autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{stage}"')
        conn.execute(f'CREATE UNLOGGED TABLE "{schema}"."{stage}" (LIKE "{schema}"."{table}" INCLUDING DEFAULTS)')
        conn.execute(f'ALTER TABLE "{schema}"."{stage}" ALTER COLUMN lead_id DROP NOT NULL')
    try:
        staged = leads.count()
        if staged:
            (
                leads.coalesce(max(1, min(4, spark.sparkContext.defaultParallelism)))
                .write.mode("append")
                .option("batchsize", batch_size)
                .jdbc(db.jdbc_url, f'"{schema}"."{stage}"', properties=db.jdbc_properties())
            )
        delivered = _publish(db, schema, table, stage, table_id, first, current, run_id)
    finally:
        with db.connect(autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{stage}"')
    log.info(
        "deliver: versions %d..%d of %s: %d inserted lead(s) staged, %d delivered to %s.%s",
        first,
        current,
        leads_path,
        staged,
        delivered,
        schema,
        table,
    )
    return Delivery(delivered, (first, current), staged)


def _publish(
    db: DbTarget, schema: str, table: str, stage: str, table_id: str, first: int, last: int, run_id: str
) -> int:
    cols = ", ".join(f'"{c}"' for c in [*LEAD_SCHEMA.fieldNames(), "run_id"])
    with db.connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"leadpipe-deliver-{table_id}",))
        done = _max_delivered(conn, schema, table_id)
        if done is not None and done >= last:
            log.info("deliver: another run delivered up to version %d meanwhile", done)
            return 0
        cur = conn.execute(
            f'INSERT INTO "{schema}"."{table}" ({cols}) SELECT {cols} FROM "{schema}"."{stage}" '
            "WHERE lead_id IS NOT NULL ON CONFLICT (lead_id) DO NOTHING"
        )
        delivered = cur.rowcount
        conn.execute(
            f'INSERT INTO "{schema}"."lead_deliveries" (table_id, version, first_version, run_id, leads_delivered) '
            "VALUES (%s, %s, %s, %s, %s)",
            (table_id, last, first, run_id, delivered),
        )
    return delivered
