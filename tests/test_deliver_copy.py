"""Delivery's three ways of writing leads put the same values in PostgreSQL.

The direct COPY (the default, ``delivery_method: direct``) streams lines rendered by Spark's
``to_csv`` through the driver into the leads table; the staged COPY (``copy``) renders Arrow
batches as CSV with pyarrow; JDBC binds values.
Values that CSV could confuse (empty string vs NULL, quotes, commas, line breaks, non-ASCII,
dates, booleans, integers, the ``extras`` map as JSON) must arrive identical both ways.
"""

from __future__ import annotations

from datetime import date

import pytest
from psycopg import sql
from pyspark.sql import functions as F

from leadpipe.canonical import LEAD_SCHEMA
from leadpipe.deliver import (
    STAGE_WRITERS,
    DeliveryRefused,
    _deliver_direct,
    copy_through_driver,
    create_stage,
    ensure_tables,
)

pytestmark = pytest.mark.integration

TRICKY = [
    "", None, 'say "hi"', "a,b", "line1\nline2", "caf\u00e9 \u2019s", " lead ", "\\N", "NULL", '"',
    "\r", "a\r\nb", "\\.", "x\n\\.\ny", "\t", "#x", '\\"',
]  # fmt: skip


def _rows() -> list[dict]:
    rows = []
    for i, value in enumerate(TRICKY):
        row = {f.name: None for f in LEAD_SCHEMA.fields}
        row.update(
            lead_id=f"tx_hhs:{i:03d}",
            source="tx_hhs",
            company=value,
            address1=value,
            snapshot_date=date(2024, 1, 5),
            license_issued=None if i % 2 else date(1999, 12, 31),
            capacity=i * 7 if i % 3 else None,
            accepts_financial_aid=bool(i % 2) if i % 4 else None,
            provider_id=value,
            extras=None if i % 3 == 0 else {"Rating": value, value or "blank": "x", "Notes": None},
        )
        rows.append({k: row[k] for k in LEAD_SCHEMA.fieldNames()})
    return rows


def test_direct_copy_and_both_stage_writers_write_the_same_values(spark, db):
    ensure_tables(db, "public", "leads")
    frame = spark.createDataFrame(_rows(), LEAD_SCHEMA).repartition(3)
    with db.connect() as conn, conn.transaction(), conn.cursor() as cur:  # as the direct delivery: jsonb extras
        cur.execute("CREATE TABLE direct_check (LIKE leads INCLUDING DEFAULTS)")
        assert copy_through_driver(cur, frame, "public", "direct_check", lines_per_write=4) == len(TRICKY)
    tables = {"direct": "direct_check"}
    for method, write in STAGE_WRITERS.items():
        stage = f"copy_check_{method}"
        with db.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(stage)))
            create_stage(conn, "public", "leads", stage)
        write(frame, db, "public", stage, 4)
        tables[method] = stage
    # as the publish step reads the stage: extras (JSON text there) cast to jsonb
    cols = sql.SQL(", ").join(
        sql.SQL("{}::jsonb").format(sql.Identifier(c)) if c == "extras" else sql.Identifier(c)
        for c in LEAD_SCHEMA.fieldNames()
    )
    with db.connect() as conn:
        got = {
            m: conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY lead_id").format(cols, sql.Identifier(t))).fetchall()
            for m, t in tables.items()
        }
    assert len(got["copy"]) == len(TRICKY)
    assert got["copy"] == got["jdbc"] == got["direct"]
    by_id = {r[0]: r for r in got["copy"]}
    company = LEAD_SCHEMA.fieldNames().index("company")
    assert [by_id[f"tx_hhs:{i:03d}"][company] for i in range(len(TRICKY))] == TRICKY
    extras = LEAD_SCHEMA.fieldNames().index("extras")
    assert [by_id[f"tx_hhs:{i:03d}"][extras] for i in range(len(TRICKY))] == [r["extras"] for r in _rows()]


def test_a_value_postgres_refuses_fails_the_direct_delivery_naming_row_and_column_not_value(spark, db):
    """PostgreSQL cannot store a NUL byte in text: the direct COPY is refused, nothing (leads,
    ledger) is committed, and the error names the COPY's row and column, never the value."""
    ensure_tables(db, "public", "leads")
    rows = _rows()[:3]
    rows[1]["company"] = "Secret\x00Daycare"
    frame = spark.createDataFrame(rows, LEAD_SCHEMA).coalesce(1).orderBy("lead_id")
    with pytest.raises(DeliveryRefused) as refused:
        _deliver_direct(frame.withColumn("run_id", F.lit("r1")), db, "public", "leads", "table-1", 0, 0, "r1")
    message = str(refused.value)
    assert "SQLSTATE 22" in message and "at row 2 of the COPY" in message, message
    assert "Secret" not in message and "Daycare" not in message
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM lead_deliveries").fetchone()[0] == 0
