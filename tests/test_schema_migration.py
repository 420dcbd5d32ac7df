"""A warehouse and a database made by the version before ``provider_id`` and ``extras`` are
migrated by the next run: real Spark, real Delta tables, a real PostgreSQL server.

The old state is built the way the old code built it: the leads table and bronze created with
the old columns, week 1 (the real 2023-07-07 files) applied by a MERGE per source with its
transaction id and commit metadata, Texas standardized by the old rules (no ``provider_id``),
and PostgreSQL's leads table made by the old DDL (with the dashboard views over it).
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from psycopg import sql
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import LEAD_SCHEMA, lead_id_for, map_to_canonical
from leadpipe.deliver import PG_TYPES, ledger_ddl, table_position
from leadpipe.discover import discover
from leadpipe.merge import APP_ID_PREFIX, LEADS_TABLE_SCHEMA, SOURCE_COLUMNS, TABLE_PROPERTIES, txn_version
from leadpipe.pipeline import run_weekly
from leadpipe.read import read_files
from leadpipe.run_report import ensure_views
from leadpipe.runs import ensure_run_table
from leadpipe.session import RULES_PLAN_CONF, session_conf
from leadpipe.validate import leads_of, tag
from leadpipe.warehouse import BRONZE_SCHEMA, Warehouse, delete_path
from tests.helpers import pg_lead_ids

pytestmark = pytest.mark.integration

NEW_COLUMNS = ("provider_id", "extras")
WEEK1, WEEK2 = date(2023, 7, 7), date(2023, 7, 14)
NEW_TX_KEY, NEW_TX_FACILITY = "9900001", "8800001"


#: the old version wrote deletion vectors
OLD_TABLE_PROPERTIES = {**TABLE_PROPERTIES, "delta.enableDeletionVectors": "true"}


def without_new(schema: T.StructType) -> T.StructType:
    return T.StructType([f for f in schema.fields if f.name not in NEW_COLUMNS])


def old_config(cfg):
    """The source's config before it mapped provider_id (Texas: no ``Facility ID`` line)."""
    return cfg.model_copy(
        update={"fields": [f for f in cfg.fields if "provider_id" not in f.outputs().values()]}, deep=True
    )


def build_old_warehouse(spark, sources, real_dir: Path, root: str) -> None:
    """The leads table and bronze of the old version, holding week 1, applied as it applied it."""
    wh = Warehouse(root)
    old_sources = {sid: old_config(cfg) for sid, cfg in sources.items()}
    found = discover(spark, str(real_dir), old_sources)
    builder = (
        DeltaTable.createIfNotExists(spark)
        .location(wh.leads)
        .addColumns(without_new(LEADS_TABLE_SCHEMA))
        .partitionedBy("source")
    )
    for k, v in OLD_TABLE_PROPERTIES.items():
        builder = builder.property(k, v)
    builder.execute()
    DeltaTable.createIfNotExists(spark).location(wh.bronze).addColumns(without_new(BRONZE_SCHEMA)).partitionedBy(
        "source", "snapshot_date"
    ).execute()
    old_columns = [c for c in SOURCE_COLUMNS if c not in NEW_COLUMNS]
    for (snapshot_date, sid), files in found.groups().items():
        cfg = old_sources[sid]
        raw = read_files(spark, files, cfg, snapshot_date)
        scratch = f"{root}/_old_scratch/{sid}"  # as the job does: the rules' plan is run once, into Parquet
        with session_conf(spark, RULES_PLAN_CONF):
            tag(map_to_canonical(raw, cfg), {sid: cfg.identity.columns}).write.parquet(scratch)
        tagged = spark.read.parquet(scratch)
        tagged.select(
            "source",
            "snapshot_date",
            "source_file",
            F.col("record_no").cast("long").alias("record_no"),
            "raw",
            F.col("_corrupt_record").alias("raw_record"),
            F.lit("old-week1").alias("run_id"),
        ).write.format("delta").mode("append").save(wh.bronze)
        valid = leads_of(tagged).select(*old_columns)
        rows_read, rows_loaded = tagged.count(), valid.count()
        meta = {
            "leadpipe": 1,
            "run_id": "old-week1",
            "source": sid,
            "snapshot_date": snapshot_date.isoformat(),
            "rules_version": cfg.rules_version(),
            "files": [{"name": f.name, "uri": f.uri, "size": f.size, "checksum": f.checksum} for f in files],
            "rows_read": rows_read,
            "rows_loaded": rows_loaded,
            "rows_rejected": rows_read - rows_loaded,
            "applied_on_purpose": False,
        }
        conf = {
            "spark.databricks.delta.write.txnAppId": APP_ID_PREFIX + sid,
            "spark.databricks.delta.write.txnVersion": str(txn_version(snapshot_date)),
            "spark.databricks.delta.commitInfo.userMetadata": json.dumps(meta),
        }
        values = {c: f"s.`{c}`" for c in old_columns}
        values.update({"is_active": "true", "removed_on": "null", "run_id": "'old-week1'", "last_change": "'new'"})
        for k, v in conf.items():
            spark.conf.set(k, v)
        try:
            DeltaTable.forPath(spark, wh.leads).alias("t").merge(
                valid.alias("s"), f"t.source = '{sid}' AND t.lead_id = s.lead_id"
            ).whenNotMatchedInsert(values=values).execute()
        finally:
            for k in conf:
                spark.conf.unset(k)
    delete_path(spark, f"{root}/_old_scratch")


def build_old_database(spark, db, leads_path: str | None) -> None:
    """PostgreSQL as the old version left it: its leads DDL, the ledger, pipeline_runs and the
    views; with ``leads_path``, week 1's leads delivered (rows and ledger) as it delivered them."""
    old = [f for f in LEAD_SCHEMA.fields if f.name not in NEW_COLUMNS]
    cols = [
        sql.SQL("{} " + PG_TYPES[f.dataType] + (" NOT NULL" if f.name in ("lead_id", "source") else "")).format(
            sql.Identifier(f.name)
        )
        for f in old
    ]
    with db.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE public.leads ({}, PRIMARY KEY (lead_id), run_id text,"
                " delivered_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.SQL(", ").join(cols))
        )
        conn.execute(ledger_ddl("public"))
        ensure_run_table(conn, "public")
        ensure_views(conn, "public", "leads")
    if leads_path is None:
        return
    names = [f.name for f in old]
    rows = spark.read.format("delta").load(leads_path).select(*names).collect()
    table_id, version = table_position(spark, leads_path)
    insert = sql.SQL("INSERT INTO public.leads ({}, run_id) VALUES ({}, 'old-week1')").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in names), sql.SQL(", ").join(sql.Placeholder() * len(names))
    )
    with db.connect() as conn:
        with conn.cursor() as cur:
            cur.executemany(insert, [tuple(r) for r in rows])
        conn.execute(
            "INSERT INTO lead_deliveries (table_id, version, first_version, run_id, leads_delivered)"
            " VALUES (%s, %s, 0, 'old-week1', %s)",
            (table_id, version, len(rows)),
        )


def week2_files(real_dir: Path, out: Path) -> Path:
    """The real files a week later; Texas's export has gained a column (``Rating``) and a provider."""
    out.mkdir()
    for f in real_dir.glob("*.csv"):
        shutil.copy(f, out / f.name.replace("07-07-2023", "07-14-2023"))
    texas = out / "07-14-2023 Texas DHHS.csv"
    lines = texas.read_bytes().split(b"\r\n")
    header, body = lines[0], [line for line in lines[1:] if line]
    first = body[0].split(b",")
    assert first[14] == b"773628"  # Facility ID
    added = b",".join(
        [NEW_TX_KEY.encode(), b"", b"New Kids Academy", *first[3:14], NEW_TX_FACILITY.encode(), *first[15:]]
    )
    rated = [line + (b",4 stars" if i % 2 == 0 else b",") for i, line in enumerate([*body, added])]
    texas.write_bytes(b"\r\n".join([header + b",Rating", *rated]) + b"\r\n")
    return out


def pg_columns(db) -> dict[str, str]:
    with db.connect() as conn:
        return dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'leads'"
            ).fetchall()
        )


def test_an_old_warehouse_and_database_are_migrated_by_a_run(spark, sources, settings, db, tmp_path, real_dir):
    root = str(tmp_path / "warehouse")
    wh = Warehouse(root)
    build_old_warehouse(spark, sources, real_dir, root)
    build_old_database(spark, db, wh.leads)
    assert not set(NEW_COLUMNS) & set(spark.read.format("delta").load(wh.leads).columns)
    assert not set(NEW_COLUMNS) & set(pg_columns(db))
    assert len(pg_lead_ids(db)) == 248

    week2 = week2_files(real_dir, tmp_path / "week2")
    run = run_weekly(spark, sources, str(week2), root, db, settings, run_id="new-week2", quality=False)
    assert run.ok, run.summary

    # Delta: migrated in place, the columns where a new table has them
    leads = spark.read.format("delta").load(wh.leads)
    assert leads.columns == LEADS_TABLE_SCHEMA.fieldNames()
    assert dict(leads.dtypes)["extras"] == "map<string,string>"
    props = DeltaTable.forPath(spark, wh.leads).detail().first().properties
    assert OLD_TABLE_PROPERTIES != TABLE_PROPERTIES
    assert {k: props.get(k) for k in TABLE_PROPERTIES} == TABLE_PROPERTIES
    s = run.summary["sources"]
    # Nevada and Oklahoma: nothing changed (no provider_id, no extras: the same hashes); Texas: the
    # rules changed (provider_id is mapped) and a column was added: restandardized, never changed
    assert (s["nv_dpbh"]["unchanged"], s["nv_dpbh"]["changed"], s["nv_dpbh"]["restandardized"]) == (100, 0, 0)
    assert (s["ok_dhs"]["unchanged"], s["ok_dhs"]["changed"], s["ok_dhs"]["restandardized"]) == (49, 0, 0)
    assert (s["tx_hhs"]["new"], s["tx_hhs"]["changed"], s["tx_hhs"]["restandardized"]) == (1, 0, 99)
    t = {r.lead_id: r for r in leads.collect()}
    k_street = t[lead_id_for("tx_hhs", ["1239246"])]
    assert (k_street.provider_id, k_street.extras, k_street.snapshot_date) == ("773628", {"Rating": "4 stars"}, WEEK2)
    assert k_street.first_seen == WEEK1
    nv = next(r for r in t.values() if r.source == "nv_dpbh")
    assert (nv.provider_id, nv.extras, nv.run_id, nv.snapshot_date) == (None, None, "old-week1", WEEK1)  # left alone
    assert sum(1 for r in t.values() if r.source == "tx_hhs" and r.provider_id) == 100

    # bronze: migrated; week 2's Texas rows carry the added column in extras (and raw)
    bronze = spark.read.format("delta").load(wh.bronze)
    assert bronze.columns == BRONZE_SCHEMA.fieldNames()
    tx2 = bronze.filter((F.col("source") == "tx_hhs") & (F.col("snapshot_date") == WEEK2)).collect()
    assert len(tx2) == 100 and {tuple(r.extras) for r in tx2} == {("Rating",)}
    assert all(r.raw["Rating"] == r.extras["Rating"] for r in tx2)
    assert bronze.filter((F.col("snapshot_date") == WEEK1) & F.col("extras").isNotNull()).count() == 0

    # PostgreSQL: migrated; the new lead arrives with provider_id and extras (jsonb)
    assert pg_columns(db)["provider_id"] == "text" and pg_columns(db)["extras"] == "jsonb"
    new_id = lead_id_for("tx_hhs", [NEW_TX_KEY])
    assert run.summary["delivered"] == 1 and pg_lead_ids(db) == set(t)
    with db.connect() as conn:
        row = conn.execute("SELECT provider_id, extras, company FROM leads WHERE lead_id = %s", (new_id,)).fetchone()
        old_row = conn.execute(
            "SELECT provider_id, extras FROM leads WHERE lead_id = %s", (lead_id_for("tx_hhs", ["1239246"]),)
        ).fetchone()
        view = conn.execute("SELECT lead_id, provider_id, extras FROM new_leads_latest_run").fetchall()
    assert row == (NEW_TX_FACILITY, {"Rating": None}, "New Kids Academy")  # its Rating cell is empty
    assert old_row == (None, None)  # delivered before the migration; delivery inserts only
    assert view == [(new_id, NEW_TX_FACILITY, {"Rating": None})]

    # the next run finds everything migrated: nothing to add, nothing applied twice
    again = run_weekly(spark, sources, str(week2), root, db, settings, run_id="new-week2-again", quality=False)
    assert again.ok, again.summary
    assert again.summary["delivered"] == 0
    assert {o.status for o in again.state.snapshots} == {"already_applied"}


def test_old_undelivered_versions_are_delivered_by_jdbc_after_the_migration(
    spark, sources, settings, db, tmp_path, real_dir
):
    """A run of the old version killed before its delivery: the next run (new version, JDBC)
    migrates both sides and delivers the old commits' inserts and its own, across the schema
    change of the change feed."""
    root = str(tmp_path / "warehouse")
    build_old_warehouse(spark, sources, real_dir, root)
    build_old_database(spark, db, None)
    week2 = week2_files(real_dir, tmp_path / "week2")
    jdbc = settings.model_copy(update={"delivery_method": "jdbc"})
    run = run_weekly(spark, sources, str(week2), root, db, jdbc, run_id="new-week2", quality=False)
    assert run.ok, run.summary
    assert run.summary["delivered"] == 249
    with db.connect() as conn:
        rows = dict(conn.execute("SELECT lead_id, extras FROM leads WHERE provider_id IS NOT NULL").fetchall())
        nulls = conn.execute("SELECT count(*) FROM leads WHERE extras IS NULL").fetchone()[0]
    # week 1's inserts as the old commits made them (no provider_id); week 2's new lead with both
    assert rows == {lead_id_for("tx_hhs", [NEW_TX_KEY]): {"Rating": None}}
    assert nulls == 248
