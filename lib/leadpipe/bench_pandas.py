"""The pandas baseline of the benchmark: what a team would write in an afternoon instead of the job.

    python -m leadpipe.bench_pandas --input .local/bench/data/100000/week-1 \\
        --db-url postgresql://postgres@127.0.0.1:5432/postgres --table pandas_leads

For every CSV in ``--input`` (the layout is told by the file name: Nevada, Oklahoma or Texas):
``pandas.read_csv`` with every column as a string (cp1252), one hand-written mapping per layout
onto a common set of columns, then only the rows whose ``lead_id`` is not in the PostgreSQL table
yet are inserted. ``lead_id`` = source + the agency's key cell (Nevada ``Credential Number``,
Oklahoma the license number after the last `` - `` of ``Type License``, Texas ``Operation #``),
trimmed and upper-cased. Standardization is what fits in an afternoon: phone digits only, email
lower-case, ZIP's first five digits, capacity as an integer, the issue date through
``pd.to_datetime(errors="coerce")``; Nevada's one-field address is split into street+city,
state and ZIP by one regular expression (its city stays in ``address``: there is no separator).

``DataFrame.to_sql`` needs SQLAlchemy for PostgreSQL, which this project does not install, so
the rows are written with the to_sql-equivalent: psycopg ``executemany`` of a parameterized
INSERT in batches of 10,000 rows, one transaction. No change detection beyond "id not seen",
no quarantine, no history, no exactly-once: this is the floor of effort, not of guarantees.

The last line of standard output is a JSON object with the counts and the seconds per step.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql

COLUMNS = [
    "lead_id",
    "source",
    "company",
    "phone",
    "email",
    "address",
    "city",
    "state",
    "zip",
    "capacity",
    "license_issued",
]
BATCH = 10_000
NV_ADDRESS = re.compile(r"^(?P<street>.*?),?\s*(?P<state>[A-Z]{2})\s+(?P<zip>\d{5})(?:-\d{4})?\s*$")


def _key(values: pd.Series) -> pd.Series:
    return values.str.strip().str.upper()


def _digits(values: pd.Series) -> pd.Series:
    return values.str.replace(r"\D", "", regex=True).replace("", None)


def _zip5(values: pd.Series) -> pd.Series:
    return values.str.extract(r"(\d{5})", expand=False)


def _int(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").astype("Int64")


def nevada(raw: pd.DataFrame) -> pd.DataFrame:
    address = raw["Address"].str.extract(NV_ADDRESS)
    return pd.DataFrame(
        {
            "lead_id": "nv_dpbh-" + _key(raw["Credential Number"]),
            "source": "nv_dpbh",
            "company": raw["Name"].str.strip(),
            "phone": _digits(raw["Phone#"]),
            "email": None,
            "address": address["street"].str.strip(),
            "city": None,  # the street runs into the city with no separator
            "state": raw["State"].str.strip().fillna(address["state"]),
            "zip": address["zip"],
            "capacity": pd.Series(pd.NA, index=raw.index, dtype="Int64"),
            "license_issued": pd.to_datetime(raw["First Issue Date"], format="%m/%d/%Y", errors="coerce"),
        }
    )


def oklahoma(raw: pd.DataFrame) -> pd.DataFrame:
    street = raw["Address1"].str.strip()
    unit = raw["Address2"].str.strip()
    return pd.DataFrame(
        {
            "lead_id": "ok_dhs-" + _key(raw["Type License"].str.rsplit(" - ", n=1).str[-1]),
            "source": "ok_dhs",
            "company": raw["Company"].str.strip(),
            "phone": _digits(raw["Phone"]),
            "email": raw["Email"].str.strip().str.lower(),
            "address": street.where(unit.isna() | (unit == ""), street + " " + unit),
            "city": raw["City"].str.strip().str.upper(),
            "state": raw["State"].str.strip(),
            "zip": _zip5(raw["Zip"]),
            "capacity": _int(raw["Total Cap"]),
            "license_issued": pd.to_datetime(
                raw["License Monitoring Since"].str.extract(r"(\d{4}-\d{2}-\d{2})", expand=False),
                format="%Y-%m-%d",
                errors="coerce",
            ),
        }
    )


def texas(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "lead_id": "tx_hhs-" + _key(raw["Operation #"]),
            "source": "tx_hhs",
            "company": raw["Operation/Caregiver Name"].str.strip(),
            "phone": _digits(raw["Phone"]),
            "email": raw["Email Address"].str.strip().str.lower(),
            "address": raw["Address"].str.strip(),
            "city": raw["City"].str.strip().str.upper(),
            "state": raw["State"].str.strip(),
            "zip": _zip5(raw["Zip"]),
            "capacity": _int(raw["Capacity"]),
            "license_issued": pd.to_datetime(raw["Issue Date"], format="%m/%d/%Y", errors="coerce"),
        }
    )


LAYOUTS = {"Nevada": nevada, "Oklahoma": oklahoma, "Texas": texas}


def read_folder(folder: Path) -> tuple[pd.DataFrame, int]:
    """Every CSV of the folder mapped to ``COLUMNS``; returns the leads and the rows read."""
    frames = []
    rows_read = 0
    for path in sorted(folder.glob("*.csv")):
        layout = next((fn for word, fn in LAYOUTS.items() if word in path.name), None)
        if layout is None:
            print(f"skipped (unknown layout): {path.name}", file=sys.stderr)
            continue
        raw = pd.read_csv(path, dtype=str, encoding="cp1252", keep_default_na=False, na_values=[""])
        rows_read += len(raw)
        frames.append(layout(raw)[COLUMNS])
    leads = pd.concat(frames, ignore_index=True)
    leads = leads[leads["lead_id"].notna() & (leads["lead_id"] != "")]
    return leads.drop_duplicates("lead_id"), rows_read


def ensure_table(conn: psycopg.Connection, table: str) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (lead_id text PRIMARY KEY, source text NOT NULL, company text, "
            "phone text, email text, address text, city text, state text, zip text, capacity integer, "
            "license_issued date)"
        ).format(sql.Identifier(table))
    )


def insert_rows(conn: psycopg.Connection, table: str, leads: pd.DataFrame) -> int:
    """``to_sql``-equivalent: parameterized INSERT, ``executemany`` in batches of ``BATCH``."""
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
    )
    out = leads.astype(object)
    out["license_issued"] = leads["license_issued"].dt.date.astype(object)
    out = out.where(leads.notna(), None)
    rows = list(out.itertuples(index=False, name=None))
    with conn.cursor() as cur:
        for start in range(0, len(rows), BATCH):
            cur.executemany(insert, rows[start : start + BATCH])
    return len(rows)


def run(folder: Path, db_url: str, table: str) -> dict:
    seconds: dict[str, float] = {}
    t = time.monotonic()
    leads, rows_read = read_folder(folder)
    seconds["read_map"] = round(time.monotonic() - t, 3)
    with psycopg.connect(db_url) as conn:
        t = time.monotonic()
        ensure_table(conn, table)
        existing = {r[0] for r in conn.execute(sql.SQL("SELECT lead_id FROM {}").format(sql.Identifier(table)))}
        new = leads[~leads["lead_id"].isin(existing)]
        seconds["existing_ids"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        inserted = insert_rows(conn, table, new)
        conn.commit()
        seconds["insert"] = round(time.monotonic() - t, 3)
    return {
        "input": str(folder),
        "rows_read": rows_read,
        "leads": len(leads),
        "existing": len(existing),
        "inserted": inserted,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_pandas", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, type=Path, help="folder of one week's CSV files")
    p.add_argument("--db-url", required=True, help="postgresql://user@host:port/db (password from PGPASSWORD)")
    p.add_argument("--table", default="pandas_leads", help="table to insert the new leads into (created if absent)")
    args = p.parse_args(argv)
    print(json.dumps(run(args.input, args.db_url, args.table)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
