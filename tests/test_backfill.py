"""Backfill: one run given a year of weekly snapshots applies them all, in date order, one MERGE
each, and ends exactly where applying them one run a week ends; an interrupted backfill resumes
after the last snapshot the leads table records as applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from leadpipe import faults
from leadpipe.canonical import lead_id_for
from leadpipe.merge import read_applied_state
from leadpipe.pipeline import run_weekly
from leadpipe.sample import generate
from tests.helpers import pg_lead_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WEEKS = int(__import__("os").environ.get("BACKFILL_WEEKS", 52))
# what a lead is, whatever run wrote it (run ids and versions differ between the two ways)
COMPARED = (
    "lead_id",
    "record_hash",
    "raw_hash",
    "first_seen",
    "snapshot_date",
    "is_active",
    "removed_on",
    "last_change",
    "regexp_extract(source_file, '[^/]+$', 0) AS file",
)


@pytest.fixture(scope="module")
def year(tmp_path_factory) -> tuple[Path, list[Path], dict]:
    """52 weekly Texas snapshots (about 30 providers, with weekly churn), all in one folder and
    each in its own."""
    root = tmp_path_factory.mktemp("year")
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


def _leads(spark, wh: Path) -> list[tuple]:
    return [
        tuple(r)
        for r in DeltaTable.forPath(spark, str(wh / "leads")).toDF().selectExpr(*COMPARED).orderBy("lead_id").collect()
    ]


def test_a_year_in_one_run_equals_a_year_of_weekly_runs(
    spark, sources, settings, db, pg_server, tmp_path, year, caplog
):
    everything, weekly, manifest = year
    backfill_wh = tmp_path / "backfill"
    with caplog.at_level("INFO", logger="leadpipe.pipeline"):
        r = run_weekly(
            spark, sources, str(everything), str(backfill_wh), db, settings, run_id="backfill", quality=False
        )
    assert r.ok, r.summary
    applied = [o for o in r.state.snapshots if o.status == "applied"]
    assert [o.snapshot_date.isoformat() for o in applied] == [w["snapshot_date"] for w in manifest["weeks"]]
    progress = [m for m in caplog.messages if m.startswith("progress: ")]
    assert len(progress) == WEEKS
    assert progress[-1].startswith(f"progress: snapshot {WEEKS}/{WEEKS} ")
    assert "about 0 s left" in progress[-1]

    weekly_wh = tmp_path / "weekly"
    for i, folder in enumerate(weekly):
        w = run_weekly(spark, sources, str(folder), str(weekly_wh), None, settings, run_id=f"week{i}", quality=False)
        assert w.ok, w.summary
    assert _leads(spark, backfill_wh) == _leads(spark, weekly_wh)
    every_lead = {lead_id_for("tx_hhs", [k]) for w in manifest["weeks"] for k in w["sources"]["tx_hhs"]["keys"]}
    assert pg_lead_ids(db) == every_lead
    assert r.summary["delivered"] == len(every_lead)


def test_an_interrupted_backfill_resumes_after_its_last_applied_snapshot(spark, sources, settings, db, tmp_path, year):
    everything, _weekly, manifest = year
    wh = tmp_path / "wh"
    merges = []

    def stop_after_ten():
        merges.append(1)
        if len(merges) == 10:
            raise RuntimeError("interrupted after the tenth MERGE")

    faults.on("after_merge", stop_after_ten)
    try:
        first = run_weekly(spark, sources, str(everything), str(wh), db, settings, run_id="part1", quality=False)
    finally:
        faults.clear()
    assert first.state.status == "failed"
    state = read_applied_state(spark, str(wh / "leads"))
    assert state.latest["tx_hhs"].isoformat() == manifest["weeks"][9]["snapshot_date"]

    second = run_weekly(spark, sources, str(everything), str(wh), db, settings, run_id="part2", quality=False)
    assert second.ok, second.summary
    statuses = [o.status for o in second.state.snapshots]
    assert statuses == ["already_applied"] * 10 + ["applied"] * (WEEKS - 10)
    assert pg_lead_ids(db) == {
        lead_id_for("tx_hhs", [k]) for w in manifest["weeks"] for k in w["sources"]["tx_hhs"]["keys"]
    }
