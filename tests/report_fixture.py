"""A small weekly-report input shared by the report's unit and browser tests.

Five new leads in two states (NV, TX) and two facility types (Center, Home); three sources, of
which Oklahoma's snapshot was held; a history of three runs, this run last. One company name is a
script tag and one lead carries a URL in its data, to show both are escaped and never fetched.

The report reads its leads from PostgreSQL, so the leads live in a real database
(``fixture_database``: the job's tables, the five leads delivered by run ``RUN_ID``) and the
report's input and CSV are read from there the way ``run_report.publish`` reads them.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from psycopg import sql

from leadpipe.canonical import LEAD_COLUMNS
from leadpipe.deliver import ensure_tables
from leadpipe.postgres import DbTarget
from leadpipe.run_report import copy_csv, read_new_leads
from leadpipe.weekly_report import ReportFiles, ReportInput, write_report

RUN_ID = "20230707T120000Z-abcd1234"
SCRIPT_COMPANY = "<script>alert(1)</script>"
URL_IN_DATA = "https://example.org/not-fetched"


def _lead(lead_id: str, source: str, authority: str, company: str, state: str, facility_type: str, **kw) -> dict:
    row = {
        "lead_id": lead_id,
        "source": source,
        "licensing_authority": authority,
        "source_file": f"{source}.csv",
        "snapshot_date": date(2023, 7, 7),
        "first_seen": date(2023, 7, 7),
        "record_hash": "0" * 64,
        "company": company,
        "first_name": None,
        "last_name": None,
        "title": None,
        "phone": None,
        "email": None,
        "address1": None,
        "address2": None,
        "city": None,
        "state": state,
        "zip": None,
        "county": None,
        "license_number": None,
        "license_type": None,
        "facility_type": facility_type,
        "capacity": None,
        "ages_served": None,
    }
    row.update(kw)
    return row


NV = ("nv_dpbh", "Nevada Division of Public and Behavioral Health")
TX = ("tx_hhs", "Texas Health and Human Services")

NEW_LEADS: list[dict] = [
    _lead(
        "tx_hhs-aaaaaaaaaaaaaaaaaaaaaaaa",
        *TX,
        "Bright Horizons Austin",
        "TX",
        "Center",
        first_name="Maria",
        last_name="Lopez",
        title="Director",
        phone="+15125550101",
        email="maria@brighthorizons.example",
        address1="100 Congress Ave",
        city="Austin",
        zip="78701",
        county="Travis",
        license_number="TX-1001",
        license_type="Licensed Center",
        capacity=120,
        ages_served="Infant, Toddler, Pre-K",
    ),
    _lead(
        "tx_hhs-bbbbbbbbbbbbbbbbbbbbbbbb",
        *TX,
        "Little Stars Home Care",
        "TX",
        "Home",
        first_name="James",
        last_name="Okafor",
        phone="+12145550102",
        address1="22 Elm St",
        address2=URL_IN_DATA,
        city="Dallas",
        zip="75201",
        license_number="TX-1002",
        capacity=12,
    ),
    _lead(
        "tx_hhs-cccccccccccccccccccccccc",
        *TX,
        SCRIPT_COMPANY,
        "TX",
        "Center",
        email="o'brien&co@example.com",
        city="Houston",
        license_number="TX-1003",
        capacity=8,
    ),
    _lead(
        "nv_dpbh-dddddddddddddddddddddddd",
        *NV,
        "Desert Sun Preschool",
        "NV",
        "Center",
        first_name="Ana",
        last_name="Reyes",
        phone="+17025550104",
        email="ana@desertsun.example",
        address1="5 Strip Blvd",
        city="Las Vegas",
        zip="89101",
        county="Clark",
        license_number="NV-77",
        capacity=45,
    ),
    _lead(
        "nv_dpbh-eeeeeeeeeeeeeeeeeeeeeeee",
        *NV,
        "Zephyr Family Home",
        "NV",
        "Home",
        last_name="Kim",
        address1="9 Pine Rd",
        city="Reno",
        zip="89501",
        license_number="NV-78",
    ),
]


def _source(
    rows_read, rows_loaded, rejected, new, changed=0, removed=0, returned=0, restd=0, unchanged=0, status="applied"
):
    return {
        "files": 1,
        "rows_read": rows_read,
        "rows_loaded": rows_loaded,
        "rows_rejected": sum(rejected.values()),
        "rejected_by_reason": rejected,
        "new": new,
        "changed": changed,
        "returned": returned,
        "restandardized": restd,
        "removed": removed,
        "unchanged": unchanged,
        "snapshots": ["2023-07-07"],
        "statuses": {"2023-07-07": status},
    }


RUN: dict = {
    "run_id": RUN_ID,
    "input": "s3://leads-inbox/2023-07-07/",
    "warehouse": "s3://leads-warehouse/",
    "status": "partial",
    "started_at": "2023-07-07T12:00:00+00:00",
    "finished_at": "2023-07-07T12:09:30+00:00",
    "sources": {
        "nv_dpbh": _source(210, 208, {"missing_business_key": 2}, new=2, changed=4, removed=1, unchanged=201),
        "ok_dhs": _source(40, 40, {}, new=0, status="held"),
        "tx_hhs": _source(
            1000,
            990,
            {"duplicate_business_key": 7, "malformed_record": 3},
            new=3,
            changed=11,
            removed=2,
            returned=1,
            restd=5,
            unchanged=968,
        ),
    },
    "snapshots": [
        {"source": "nv_dpbh", "snapshot_date": "2023-07-07", "status": "applied", "message": None},
        {
            "source": "ok_dhs",
            "snapshot_date": "2023-07-07",
            "status": "held",
            "message": "ok_dhs 2023-07-07 held: 40 rows, fewer than 0.5 of the previous snapshot's 900",
        },
        {"source": "tx_hhs", "snapshot_date": "2023-07-07", "status": "applied", "message": None},
    ],
    "delivered": 5,
    "delivered_versions": [3, 4],
    "unmatched_files": [],
    "errors": ["ok_dhs 2023-07-07 held: 40 rows, fewer than 0.5 of the previous snapshot's 900"],
    "warnings": [],
}

HISTORY: list[dict] = [
    {
        "run_id": "20230623T120000Z-11111111",
        "finished_at": "2023-06-23T12:05:00+00:00",
        "status": "succeeded",
        "sources": {
            "nv_dpbh": {"new": 180, "removed": 0},
            "ok_dhs": {"new": 900, "removed": 0},
            "tx_hhs": {"new": 960, "removed": 0},
        },
    },
    {
        "run_id": "20230630T120000Z-22222222",
        "finished_at": "2023-06-30T12:04:00+00:00",
        "status": "succeeded",
        "sources": {
            "nv_dpbh": {"new": 20, "removed": 3},
            "ok_dhs": {"new": 6, "removed": 4},
            "tx_hhs": {"new": 12, "removed": 9},
        },
    },
    {
        "run_id": RUN_ID,
        "finished_at": RUN["finished_at"],
        "status": "partial",
        "sources": {
            "nv_dpbh": {"new": 2, "removed": 1},
            "ok_dhs": {"new": 0, "removed": 0},
            "tx_hhs": {"new": 3, "removed": 2},
        },
    },
]

PREVIOUS_REPORT = "../20230630T120000Z-22222222/index.html"


SCHEMA, TABLE = "public", "leads"


@contextlib.contextmanager
def fixture_database(pg_server) -> Iterator[DbTarget]:
    """A database of its own on the test server: the job's tables, ``NEW_LEADS`` delivered by ``RUN_ID``."""
    admin = pg_server.target()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        db = pg_server.target(name)
        load(db, NEW_LEADS)
        yield db
    finally:
        with admin.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def load(db: DbTarget, leads: list[dict], run_id: str = RUN_ID) -> None:
    """Create the job's tables when absent and insert ``leads`` as delivered by ``run_id``."""
    ensure_tables(db, SCHEMA, TABLE)
    if not leads:
        return
    columns = [c for c in LEAD_COLUMNS if any(c in r for r in leads)]
    insert = sql.SQL("INSERT INTO {} ({}, run_id) VALUES ({}, %s)").format(
        sql.Identifier(SCHEMA, TABLE),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(insert, [[r.get(c) for c in columns] + [run_id] for r in leads])


def report_input(db: DbTarget, new_leads: list[dict] | None = None, **changes) -> ReportInput:
    """The fixture input, its leads read from ``db`` (run ``RUN_ID``); ``new_leads`` are loaded as
    another run's and read instead; other keyword arguments replace the input's fields."""
    run_id = RUN_ID
    if new_leads is not None:
        run_id = f"run-{uuid.uuid4().hex[:8]}"
        load(db, new_leads, run_id)
    with db.connect() as conn:
        leads = read_new_leads(conn, SCHEMA, TABLE, run_id)
    fields = {"run": RUN, "new_leads": leads, "history": HISTORY, "previous_report": PREVIOUS_REPORT}
    fields.update(changes)
    return ReportInput(**fields)


def write_fixture_report(db: DbTarget, folder: Path, inp: ReportInput | None = None) -> ReportFiles:
    """``write_report`` of the fixture input (or ``inp``), its CSV streamed from ``db``'s run ``RUN_ID``."""
    with db.connect() as conn:
        return write_report(folder, inp or report_input(db), functools.partial(copy_csv, conn, SCHEMA, TABLE, RUN_ID))
