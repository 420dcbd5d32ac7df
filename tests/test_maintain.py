"""Maintenance: OPTIMIZE compacts the warehouse's tables and VACUUM cleans them, and neither
changes what the leads table records as applied nor what a run does next."""

from __future__ import annotations

import pytest
from delta.tables import DeltaTable

from leadpipe.maintain import maintain
from leadpipe.merge import read_applied_state
from leadpipe.pipeline import run_weekly
from leadpipe.sample import generate
from leadpipe.warehouse import Warehouse

pytestmark = pytest.mark.integration


def _files(spark, path: str) -> int:
    return int(DeltaTable.forPath(spark, path).detail().first()["numFiles"])


def test_optimize_and_vacuum_keep_the_state_of_record(spark, sources, settings, tmp_path):
    weeks = generate(tmp_path / "sample", weeks=2, providers=30, seed=3)["weeks"]
    wh = Warehouse(str(tmp_path / "wh"))
    for w in weeks:
        assert run_weekly(spark, sources, w["input"], wh.root, None, settings, quality=False).ok
    before = read_applied_state(spark, wh.leads)
    files_before = _files(spark, wh.leads)
    rows_before = spark.read.format("delta").load(wh.leads).count()

    done = maintain(spark, wh)

    assert [d.table for d in done] == [wh.leads, wh.bronze, wh.quarantine]
    assert _files(spark, wh.leads) < files_before
    assert spark.read.format("delta").load(wh.leads).count() == rows_before
    after = read_applied_state(spark, wh.leads)
    assert after.latest == before.latest
    assert set(after.applied) == set(before.applied)
    again = run_weekly(spark, sources, weeks[-1]["input"], wh.root, None, settings, quality=False)
    assert {o.status for o in again.state.snapshots} == {"already_applied"}


def test_vacuum_retention_below_a_week_is_refused(spark, tmp_path):
    with pytest.raises(ValueError, match="at least 168"):
        maintain(spark, Warehouse(str(tmp_path / "wh")), retain_hours=1)
