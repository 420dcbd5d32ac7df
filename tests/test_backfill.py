"""Backfill: one run given a year of weekly snapshots applies them all, in date order, one MERGE
each, with a progress line per snapshot; interrupted, it resumes after the last snapshot the
leads table records as applied; and it ends exactly where as many weekly runs end. Then
maintenance (OPTIMIZE, VACUUM) leaves the state of record as it was. The snapshots are read
ahead in one job, and still planned one at a time: a held one holds those behind it, and a
failed read-ahead leaves every table as reading each snapshot at its turn does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from leadpipe import faults
from leadpipe.canonical import lead_id_for
from leadpipe.maintain import maintain
from leadpipe.merge import read_applied_state
from leadpipe.pipeline import run_weekly
from leadpipe.sample import generate
from leadpipe.session import session_conf
from leadpipe.warehouse import Warehouse
from tests.helpers import COMPILED_CONF, pg_lead_ids, real_week

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A year of weekly snapshots (`make bench BACKFILL=52x100000` times the same at 100,000 rows a week)
WEEKS = 52
STOP_AFTER = 26  # MERGEs before the first attempt is interrupted
COMPILED_WEEKS = 2  # the reference's last weekly runs, planned and compiled as the job plans them
# During the backfill, at most this many rows per Parquet file, as a big table's leads spread over
# many files: a MERGE then rewrites only the files holding the leads it changes, and leaves many
# small files for maintenance to compact (30 leads in one file would leave it nothing to do).
ROWS_PER_FILE = "8"
# what a lead is, whatever run wrote it (run ids and versions differ between the two ways)
COMPARED = (
    "lead_id", "record_hash", "raw_hash", "first_seen", "snapshot_date", "is_active", "removed_on", "last_change",
    "regexp_extract(source_file, '[^/]+$', 0) AS file",
)  # fmt: skip


def _year(root: Path) -> tuple[Path, list[Path], dict]:
    """WEEKS weekly Texas snapshots (about 30 providers, with weekly churn), all in one folder and
    each in its own."""
    manifest = generate(root / "gen", weeks=WEEKS, providers=90, seed=5, truncate_oklahoma=False)
    everything = root / "all"
    everything.mkdir()
    weekly = []
    for w in manifest["weeks"]:
        folder = root / f"only-{w['week']:02d}"
        folder.mkdir()
        for f in Path(w["input"]).glob("*Texas*.csv"):
            shutil.copy(f, everything / f.name)
            shutil.copy(f, folder / f.name)
        weekly.append(folder)
    return everything, weekly, manifest


def _leads(spark, path: str) -> list[tuple]:
    return [tuple(r) for r in DeltaTable.forPath(spark, path).toDF().selectExpr(*COMPARED).orderBy("lead_id").collect()]


def test_a_year_in_one_resumed_run_equals_as_many_weekly_runs(spark, sources, settings, db, tmp_path, caplog):
    everything, weekly, manifest = _year(tmp_path)
    dates = [w["snapshot_date"] for w in manifest["weeks"]]
    with session_conf(spark, {"spark.sql.files.maxRecordsPerFile": ROWS_PER_FILE}):
        wh = Warehouse(str(tmp_path / "backfill"))
        merges = []

        def interrupt():
            merges.append(1)
            if len(merges) == STOP_AFTER:
                raise RuntimeError(f"interrupted after MERGE {STOP_AFTER}")

        faults.on("after_merge", interrupt)
        try:
            first = run_weekly(spark, sources, str(everything), wh.root, db, settings, run_id="part1", quality=False)
        finally:
            faults.clear()
        assert first.state.status == "failed"
        assert read_applied_state(spark, wh.leads).latest["tx_hhs"].isoformat() == dates[STOP_AFTER - 1]

        caplog.clear()  # the interrupted run's lines are not the resumed run's
        with caplog.at_level("INFO", logger="leadpipe.pipeline"):
            second = run_weekly(spark, sources, str(everything), wh.root, db, settings, run_id="part2", quality=False)
        assert second.ok, second.summary
        assert [o.status for o in second.state.snapshots] == ["already_applied"] * STOP_AFTER + ["applied"] * (
            WEEKS - STOP_AFTER
        )
        assert [o.snapshot_date.isoformat() for o in second.state.snapshots] == dates
        ahead = f"read ahead: {WEEKS - STOP_AFTER} snapshot(s) of 1 source(s) read, standardized and tagged in one job"
        assert any(m.startswith(ahead) for m in caplog.messages)  # only those not applied yet
        progress = [m for m in caplog.messages if m.startswith("progress: ")]
        assert len(progress) == WEEKS
        assert progress[0].startswith(f"progress: snapshot 1/{WEEKS} ({dates[0]}): tx_hhs already_applied; 0 row(s)")
        assert progress[-1].startswith(f"progress: snapshot {WEEKS}/{WEEKS} ({dates[-1]}): tx_hhs applied; ")
        assert progress[-1].endswith("about 0 s left")
        every_lead = {lead_id_for("tx_hhs", [k]) for w in manifest["weeks"] for k in w["sources"]["tx_hhs"]["keys"]}
        assert pg_lead_ids(db) == every_lead  # each delivered once, over the two attempts
        assert first.summary["delivered"] + second.summary["delivered"] == len(every_lead)

    # the reference: the same weeks, each in its own weekly run, one at a time, in the suite's
    # session (tests.helpers.SMALL_DATA_CONF: interpreted, no adaptive execution), but for the last
    # COMPILED_WEEKS, planned as the job plans (COMPILED_CONF: compiled, adaptive): the leads they
    # change and the stored standardization they reuse are compared with the backfill's, so the
    # comparison also checks that both ways give the same leads
    reference_wh = tmp_path / "weekly"
    compiled = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
    for i, folder in enumerate(weekly, start=1):
        conf = COMPILED_CONF if i > WEEKS - COMPILED_WEEKS else {}
        classes = compiled.getCount()
        with session_conf(spark, conf):
            r = run_weekly(
                spark, sources, str(folder), str(reference_wh), None, settings, run_id=f"week{i}", quality=False
            )
        assert r.ok, (i, r.summary)
        if conf:
            assert compiled.getCount() > classes  # it did compile
    backfilled = _leads(spark, wh.leads)
    assert backfilled == _leads(spark, str(reference_wh / "leads"))
    assert sum(1 for r in backfilled if r[5]) == len(manifest["weeks"][-1]["sources"]["tx_hhs"]["keys"])

    # maintenance after a backfill: compaction changes files, never the state of record
    state = read_applied_state(spark, wh.leads)
    files = DeltaTable.forPath(spark, wh.leads).detail().first()["numFiles"]
    assert files > 1
    maintain(spark, wh)
    assert DeltaTable.forPath(spark, wh.leads).detail().first()["numFiles"] < files
    assert _leads(spark, wh.leads) == backfilled
    after = read_applied_state(spark, wh.leads)
    assert (after.latest, set(after.applied)) == (state.latest, set(state.applied))
    again = run_weekly(spark, sources, str(weekly[-1]), wh.root, None, settings, run_id="after", quality=False)
    assert [o.status for o in again.state.snapshots] == ["already_applied"]


def test_snapshots_are_read_ahead_in_one_job_and_each_is_still_planned_at_its_turn(
    spark, sources, settings, tmp_path, real_dir, caplog, monkeypatch
):
    """Given three dates, every (source, snapshot) is read, standardized and tagged in one job
    before the first MERGE. Each snapshot is still planned at its turn: Texas cut to 10 rows in
    the second week is held, the third week's Texas waits behind it, and its rows read ahead are
    never used. When the read-ahead fails (its listing, here), each snapshot is read at its turn
    and every table ends as it did."""
    from leadpipe import pipeline

    backfill = tmp_path / "in"
    for stamp, texas in (("07-07-2023", None), ("07-14-2023", 10), ("07-21-2023", None)):
        real_week(real_dir, backfill / stamp, stamp, texas_records=texas)
    nevada = next((backfill / "07-21-2023").glob("*Nevada*"))  # the third week's Nevada gains a column
    lines = nevada.read_bytes().split(b"\r\n")
    nevada.write_bytes(b"\r\n".join([lines[0] + b",Notes", *(line + b",see file" for line in lines[1:] if line)]))

    def run(run_id: str):
        caplog.clear()
        with caplog.at_level("INFO", logger="leadpipe.pipeline"):
            r = run_weekly(
                spark, sources, str(backfill), str(tmp_path / run_id), None, settings, run_id=run_id, quality=False
            )
        statuses = {(o.source, o.snapshot_date.isoformat()): o.status for o in r.state.snapshots}
        wh = Warehouse(str(tmp_path / run_id))
        bronze = (
            spark.read.format("delta")
            .load(wh.bronze)
            .groupBy("source", "snapshot_date", F.to_json("extras").alias("extras"))
            .count()
            .orderBy("source", "snapshot_date", "extras")
        )
        return r, statuses, [tuple(b) for b in bronze.collect()], _leads(spark, wh.leads), list(caplog.messages)

    expected = {
        (s, d): "applied" for s in ("nv_dpbh", "ok_dhs", "tx_hhs") for d in ("2023-07-07", "2023-07-14", "2023-07-21")
    }
    expected[("tx_hhs", "2023-07-14")] = expected[("tx_hhs", "2023-07-21")] = "held"

    ahead, statuses, bronze, leads, lines = run("ahead")
    assert statuses == expected, ahead.summary
    assert any(
        m.startswith("read ahead: 9 snapshot(s) of 3 source(s) read, standardized and tagged in one job") for m in lines
    )
    held = [o for o in ahead.state.snapshots if o.status == "held"]
    assert "has 10 row(s), fewer than 50% of the 99" in held[0].message
    assert "tx_hhs 2023-07-21 held: its snapshot 2023-07-14 was held; it waits" in held[1].message
    nevada_extras = {str(d): (x, n) for s, d, x, n in bronze if s == "nv_dpbh"}
    assert nevada_extras == {  # each snapshot's raw map and extras are its own files' columns
        "2023-07-07": (None, 100),
        "2023-07-14": (None, 100),
        "2023-07-21": ('{"Notes":"see file"}', 100),
    }
    texas_in_bronze = {str(d): n for s, d, _, n in bronze if s == "tx_hhs"}
    assert texas_in_bronze == {"2023-07-07": 99, "2023-07-14": 10}  # the waiting week's rows read ahead: unused
    assert not (tmp_path / "ahead" / "_scratch" / "ahead").exists()  # the run's scratch went with it

    def listing_fails(spark, location):
        raise OSError(f"{location}: connection reset")

    monkeypatch.setattr(pipeline, "list_files", listing_fails)
    each, statuses_each, bronze_each, leads_each, lines = run("each")
    assert any(m.startswith("read ahead: failed (") and "connection reset" in m for m in lines)
    assert not any(m.startswith("read ahead: 9") for m in lines)
    assert statuses_each == expected, each.summary
    assert bronze_each == bronze
    assert leads_each == leads
