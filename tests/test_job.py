"""The weekly job end to end: real Spark, real Delta tables, a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leadpipe.canonical import lead_id_for
from leadpipe.pipeline import run_weekly
from leadpipe.sample import generate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def pg_lead_ids(db) -> set[str]:
    with db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT lead_id FROM leads").fetchall()}


def expected_ids(week: dict, part: str = "keys") -> set[str]:
    return {lead_id_for(s, [k]) for s, v in week["sources"].items() for k in v[part]}


def test_week1_then_week2_then_replays(spark, sources, settings, db, tmp_path):
    manifest = generate(tmp_path / "sample", weeks=2, providers=90, seed=11)
    w1, w2 = manifest["weeks"]
    wh = str(tmp_path / "warehouse")

    r1 = run_weekly(spark, sources, w1["input"], wh, db, settings, run_id="week1")
    assert r1.ok, r1.summary
    assert pg_lead_ids(db) == expected_ids(w1)
    assert r1.summary["delivered"] == len(expected_ids(w1))
    for sid, s in r1.summary["sources"].items():
        m = w1["sources"][sid]
        assert (s["files"], s["rows_read"], s["rows_loaded"], s["new"]) == (
            1,
            m["rows"],
            len(m["keys"]),
            len(m["keys"]),
        )
        assert s["rows_loaded"] + s["rows_rejected"] == s["rows_read"]
    assert r1.summary["sources"]["ok_dhs"]["rejected_by_reason"] == {"malformed_record": 1}  # the cut-off record

    r2 = run_weekly(spark, sources, w2["input"], wh, db, settings, run_id="week2")
    assert r2.ok, r2.summary
    for sid, s in r2.summary["sources"].items():
        m = w2["sources"][sid]
        got = (s["new"], s["changed"], s["removed"], s["unchanged"])
        want = (len(m["new"]), len(m["changed"]), len(m["removed"]), len(m["keys"]) - len(m["new"]) - len(m["changed"]))
        assert got == want, sid
    # the sales table gains exactly week 2's new leads; removed providers stay (they were delivered)
    assert pg_lead_ids(db) == expected_ids(w1) | expected_ids(w2, "new")
    assert r2.summary["delivered"] == len(expected_ids(w2, "new"))

    again = run_weekly(spark, sources, w2["input"], wh, db, settings, run_id="week2-again")
    assert again.ok
    assert again.summary["delivered"] == 0
    assert all((s["new"], s["changed"], s["removed"]) == (0, 0, 0) for s in again.summary["sources"].values())

    # an older snapshot after a newer one is never merged: it would resurrect removed leads
    stale = run_weekly(spark, sources, w1["input"], wh, db, settings, run_id="week1-late")
    assert stale.ok
    assert stale.summary["delivered"] == 0
    for s in stale.summary["sources"].values():
        assert s["rows_loaded"] == 0
        assert s["rows_rejected"] == s["rows_read"]
        assert set(s["rejected_by_reason"]) == {"stale_snapshot"}
    assert pg_lead_ids(db) == expected_ids(w1) | expected_ids(w2, "new")

    # nothing read is lost: bronze holds every row, quarantine every rejected one, with a reason
    bronze = spark.read.format("delta").load(f"{wh}/bronze")
    assert bronze.count() == sum(v["rows"] for w in (w1, w2) for v in w["sources"].values())
    quarantine = spark.read.format("delta").load(f"{wh}/quarantine")
    week2_reasons = {r.reason for r in quarantine.filter("snapshot_date = DATE'2024-01-12'").collect()}
    assert week2_reasons == {"malformed_record"}
    # the late replay of week 1 added its stale rows and kept week 1's own reasons
    week1 = quarantine.filter("snapshot_date = DATE'2024-01-05'").groupBy("reason").count().collect()
    rows_w1 = sum(v["rows"] for v in w1["sources"].values())
    assert {r.reason: r["count"] for r in week1} == {"malformed_record": 1, "stale_snapshot": rows_w1}


def test_a_run_killed_before_delivery_is_delivered_by_the_next(spark, sources, settings, db, tmp_path):
    manifest = generate(tmp_path / "sample", weeks=2, providers=30, seed=5)
    w1, w2 = manifest["weeks"]
    wh = str(tmp_path / "warehouse")
    # week 1 merges but never delivers (as if killed between MERGE and delivery)
    r1 = run_weekly(spark, sources, w1["input"], wh, None, settings, run_id="killed")
    assert r1.ok and r1.summary["delivered"] == 0
    # a file no source claims is reported, never silently ignored
    stray = Path(w2["input"]) / "07-07-2023 Utah DHHS.csv"
    stray.write_text("a,b\r\n1,2\r\n")
    r2 = run_weekly(spark, sources, w2["input"], wh, db, settings, run_id="next")
    assert [u.rsplit("/", 1)[-1] for u in r2.summary["unmatched_files"]] == [stray.name]
    assert pg_lead_ids(db) == expected_ids(w1) | expected_ids(w2, "new")
    assert r2.summary["delivered"] == len(expected_ids(w1) | expected_ids(w2, "new"))


def test_the_three_real_files_twice(spark, sources, settings, db, tmp_path, real_dir):
    wh = str(tmp_path / "warehouse")
    first = run_weekly(spark, sources, str(real_dir), wh, db, settings, run_id="real1")
    assert first.ok, first.summary
    s = first.summary["sources"]
    assert (s["nv_dpbh"]["rows_read"], s["nv_dpbh"]["rows_loaded"]) == (100, 100)
    assert (s["tx_hhs"]["rows_read"], s["tx_hhs"]["rows_loaded"]) == (99, 99)
    # Oklahoma: 50 read; the last record is cut off inside an open quote and quarantined
    assert (s["ok_dhs"]["rows_read"], s["ok_dhs"]["rows_loaded"], s["ok_dhs"]["rows_rejected"]) == (50, 49, 1)
    assert first.summary["delivered"] == 248
    assert len(pg_lead_ids(db)) == 248

    # the exact command a data engineer runs, through the venv's spark-submit
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PGPASSWORD": "unused-by-trust-auth"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    cmd = [
        "spark-submit",
        "jobs/weekly_leads.py",
        "--input",
        str(real_dir),
        "--warehouse",
        wh,
        "--db-url",
        f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded"
    assert summary["delivered"] == 0
    assert {sid: v["rows_read"] for sid, v in summary["sources"].items()} == {
        "nv_dpbh": 100,
        "ok_dhs": 50,
        "tx_hhs": 99,
    }
    assert all(v["new"] == 0 and v["removed"] == 0 for v in summary["sources"].values())
    assert "unused-by-trust-auth" not in proc.stderr + proc.stdout  # the password is never logged
    assert len(pg_lead_ids(db)) == 248


def test_cli_failure_exits_non_zero_with_a_json_last_line(tmp_path):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    proc = subprocess.run(
        [sys.executable, "jobs/weekly_leads.py", "--input", str(tmp_path / "missing"), "--db-url", "mysql://x@y/z"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "failed"
    assert "postgresql://" in summary["errors"][0]


def test_help_documents_every_flag():
    proc = subprocess.run([sys.executable, "jobs/weekly_leads.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in (
        "--input",
        "--warehouse",
        "--db-url",
        "--conf-dir",
        "--run-id",
        "--master",
        "--no-quality",
        "PGPASSWORD",
    ):
        assert flag in proc.stdout
