"""The weekly job end to end: real Spark, real Delta tables, a real PostgreSQL server."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from leadpipe.canonical import lead_id_for
from leadpipe.pipeline import run_weekly
from leadpipe.sample import generate
from tests.helpers import job_env, pg_lead_ids
from tests.test_report_browser import open_page, visible_ids

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def expected_ids(week: dict, part: str = "keys") -> set[str]:
    """lead_ids from the generator's raw license numbers (Oklahoma writes them after the type)."""
    return {lead_id_for(s, [k]) for s, v in week["sources"].items() for k in v[part]}


def test_week1_then_week2_then_replays(spark, sources, settings, db, tmp_path, browser):
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
    assert list(Path(wh, "_scratch").iterdir()) == []  # a finished run leaves no scratch for the next to find
    for sid, s in r2.summary["sources"].items():
        m = w2["sources"][sid]
        got = (s["new"], s["changed"], s["removed"], s["unchanged"])
        want = (len(m["new"]), len(m["changed"]), len(m["removed"]), len(m["keys"]) - len(m["new"]) - len(m["changed"]))
        assert got == want, sid
    # the sales table gains exactly week 2's new leads; removed providers stay (they were delivered)
    assert pg_lead_ids(db) == expected_ids(w1) | expected_ids(w2, "new")
    assert r2.summary["delivered"] == len(expected_ids(w2, "new"))

    # the report's CSV holds exactly the run's rows of PostgreSQL's leads, field by field
    csv_path = Path(r2.summary["report"]["csv"])
    assert csv_path.parent == tmp_path / "reports" / r2.summary["finished_at"][:10] / "week2"
    with csv_path.open(newline="", encoding="utf-8") as f:
        csv_rows = {r["lead_id"]: r for r in csv.DictReader(f)}
    with db.connect() as conn:
        cur = conn.execute("SELECT * FROM leads WHERE run_id = 'week2'")
        names = [d.name for d in cur.description]
        pg_rows = {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    assert set(csv_rows) == set(pg_rows) == expected_ids(w2, "new")
    for lead_id, row in csv_rows.items():
        for col, value in row.items():
            want = pg_rows[lead_id][col]
            assert value == ("" if want is None else str(want)), (lead_id, col)
    # the report as a person sees it: the rendered page shows the run's count and its leads
    opened = open_page(browser, Path(r2.summary["report"]["html"]).as_uri(), tmp_path)
    try:
        assert opened.page.inner_text("#new-count").strip() == str(len(expected_ids(w2, "new")))
        assert sorted(visible_ids(opened.page)) == sorted(expected_ids(w2, "new"))
        previous = os.path.relpath(r1.summary["report"]["html"], Path(r2.summary["report"]["html"]).parent)
        assert opened.page.locator("#previous-report").get_attribute("href") == previous
        assert opened.outside == [] and opened.errors == []
    finally:
        opened.page.context.close()

    # the dashboard views answer
    with db.connect() as conn:
        latest = {r[0] for r in conn.execute("SELECT lead_id FROM new_leads_latest_run").fetchall()}
        by_state = conn.execute("SELECT sum(leads) FROM leads_by_state_and_type").fetchone()[0]
        history = conn.execute(
            "SELECT run_id, source, new, removed FROM pipeline_run_history ORDER BY run_id, source"
        ).fetchall()
    assert latest == expected_ids(w2, "new")
    assert by_state == len(expected_ids(w1) | expected_ids(w2, "new"))
    assert [(run, src, new) for run, src, new, _ in history if run == "week2"] == [
        ("week2", sid, len(w2["sources"][sid]["new"])) for sid in sorted(w2["sources"])
    ]

    again = run_weekly(spark, sources, w2["input"], wh, db, settings, run_id="week2-again")
    assert again.ok
    assert again.summary["delivered"] == 0
    assert all((s["new"], s["changed"], s["removed"]) == (0, 0, 0) for s in again.summary["sources"].values())

    # a replay of an applied snapshot is recognised by its files' checksums: not read, nothing committed
    version = DeltaTable.forPath(spark, f"{wh}/leads").history(1).first().version
    replay = run_weekly(spark, sources, w1["input"], wh, db, settings, run_id="week1-replay")
    assert replay.ok, replay.summary
    assert {(o.source, o.status, o.rows_read) for o in replay.state.snapshots} == {
        (sid, "already_applied", 0) for sid in w1["sources"]
    }
    assert DeltaTable.forPath(spark, f"{wh}/leads").history(1).first().version == version

    # the same applied file name with other bytes is reported, never merged again or ignored
    changed = tmp_path / "changed"
    shutil.copytree(w1["input"], changed)
    texas = next(changed.glob("*Texas DHHS.csv"))
    texas.write_bytes(texas.read_bytes() + b"999999,,Late Addition,1 MAIN ST,AUSTIN,TX,78701\r\n")
    again1 = run_weekly(spark, sources, str(changed), wh, db, settings, run_id="week1-changed")
    assert again1.state.status == "partial" and again1.state.exit_code == 3
    outcome = {o.source: o for o in again1.state.snapshots}
    assert outcome["tx_hhs"].status == "changed_after_apply"
    assert texas.name in outcome["tx_hhs"].message and "run week1" in outcome["tx_hhs"].message
    assert {outcome["nv_dpbh"].status, outcome["ok_dhs"].status} == {"already_applied"}
    assert DeltaTable.forPath(spark, f"{wh}/leads").history(1).first().version == version

    # a late file dated between two applied snapshots is never merged: it would resurrect removed
    # leads; its rows are quarantined as stale_snapshot, and a file no source claims is reported
    late = tmp_path / "late"
    late.mkdir()
    for f in Path(w1["input"]).iterdir():
        shutil.copy(f, late / f.name.replace("01-05-2024", "01-08-2024"))
    stray = late / "07-07-2023 Utah DHHS.csv"
    stray.write_text("a,b\r\n1,2\r\n")
    stale = run_weekly(spark, sources, str(late), wh, db, settings, run_id="late")
    assert stale.ok, stale.summary
    assert [u.rsplit("/", 1)[-1] for u in stale.summary["unmatched_files"]] == [stray.name]
    assert stale.summary["delivered"] == 0
    for sid, s in stale.summary["sources"].items():
        assert s["statuses"] == {"2024-01-08": "stale"}
        assert (s["rows_loaded"], s["rows_rejected"], s["rows_read"]) == (0, w1["sources"][sid]["rows"], s["rows_read"])
        assert set(s["rejected_by_reason"]) == {"stale_snapshot"}
    assert DeltaTable.forPath(spark, f"{wh}/leads").history(1).first().version == version
    assert pg_lead_ids(db) == expected_ids(w1) | expected_ids(w2, "new")

    # nothing read is lost: bronze holds every row, quarantine every rejected one, with a reason
    bronze = spark.read.format("delta").load(f"{wh}/bronze")
    rows_w1 = sum(v["rows"] for v in w1["sources"].values())
    assert bronze.count() == sum(v["rows"] for w in (w1, w2) for v in w["sources"].values()) + rows_w1
    quarantine = spark.read.format("delta").load(f"{wh}/quarantine")
    week2_reasons = {r.reason for r in quarantine.filter("snapshot_date = DATE'2024-01-12'").collect()}
    assert week2_reasons == {"malformed_record"}
    late_rows = quarantine.filter("snapshot_date = DATE'2024-01-08'").groupBy("reason").count().collect()
    assert {r.reason: r["count"] for r in late_rows} == {"stale_snapshot": rows_w1}

    # the run record: one row per run, with its outcome and the leads it delivered
    with db.connect() as conn:
        runs = dict(conn.execute("SELECT run_id, status FROM pipeline_runs").fetchall())
        delivered = dict(conn.execute("SELECT run_id, delivered FROM pipeline_runs").fetchall())
    assert runs == {
        **dict.fromkeys(["week1", "week2", "week2-again", "week1-replay", "late"], "succeeded"),
        "week1-changed": "partial",
    }
    assert delivered["week1"] == len(expected_ids(w1)) and delivered["week2-again"] == 0


def test_the_three_real_files_twice(real_files_run, real_dir):
    wh, db = str(real_files_run.warehouse), real_files_run.db
    first = real_files_run.result  # run_weekly over the three files, in this session's Spark
    assert first.ok, first.summary
    s = first.summary["sources"]
    assert (s["nv_dpbh"]["rows_read"], s["nv_dpbh"]["rows_loaded"]) == (100, 100)
    assert (s["tx_hhs"]["rows_read"], s["tx_hhs"]["rows_loaded"]) == (99, 99)
    # Oklahoma: 50 read; the last record is cut off inside an open quote and quarantined
    assert (s["ok_dhs"]["rows_read"], s["ok_dhs"]["rows_loaded"], s["ok_dhs"]["rows_rejected"]) == (50, 49, 1)
    assert first.summary["delivered"] == 248
    assert len(pg_lead_ids(db)) == 248

    # the exact command a data engineer runs, through the venv's spark-submit
    env = job_env(PGPASSWORD="unused-by-trust-auth")
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
    # the replay is recognised from the files' checksums before parsing: nothing read or merged
    assert {sid: v["statuses"] for sid, v in summary["sources"].items()} == {
        sid: {"2023-07-07": "already_applied"} for sid in ("nv_dpbh", "ok_dhs", "tx_hhs")
    }
    assert all(v["rows_read"] == 0 and v["new"] == 0 for v in summary["sources"].values())
    assert "unused-by-trust-auth" not in proc.stderr + proc.stdout  # the password is never logged
    assert len(pg_lead_ids(db)) == 248


def test_cli_failure_exits_non_zero_with_a_json_last_line(tmp_path):
    env = job_env()
    url = "postgresql://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    text = (conf / "settings.yaml").read_text()
    (conf / "settings.yaml").write_text(text.replace("connect_attempts: 4", "connect_attempts: 2"))
    proc = subprocess.run(
        [sys.executable, "jobs/weekly_leads.py", "--input", str(tmp_path / "missing"), "--db-url", url],
        cwd=ROOT,
        env={**env, "LEADPIPE_CONF_DIR": str(conf)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "failed"
    assert "unreachable after 2 attempt(s)" in summary["errors"][0]


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
        "--apply-held",
        "--reports",
        "--archive",
        "PGPASSWORD",
        "4 another run",
    ):
        assert flag in proc.stdout
