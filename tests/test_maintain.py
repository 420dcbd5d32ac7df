"""Maintenance refuses a VACUUM retention that could delete files a delivery still needs, and
waits its turn while a run holds the warehouse (the compaction itself is exercised after the
52-week backfill in tests/test_backfill.py)."""

from __future__ import annotations

import json

import pytest

from leadpipe.cli import maintain_main
from leadpipe.maintain import maintain
from leadpipe.runs import RunLock
from leadpipe.state import EXIT_CODES
from leadpipe.warehouse import Warehouse


def test_vacuum_retention_below_a_week_is_refused(spark, tmp_path):
    with pytest.raises(ValueError, match="at least 168"):
        maintain(spark, Warehouse(str(tmp_path / "wh")), retain_hours=1)


@pytest.mark.integration
def test_maintenance_waits_its_turn_exit_4_while_a_run_holds_the_warehouse(db, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("leadpipe.cli._session", lambda *a, **k: pytest.fail("Spark started before the lock"))
    wh = str(tmp_path / "wh")
    holder = RunLock(db, wh)
    holder.acquire("the-weekly-run")
    try:
        url = f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}"
        code = maintain_main(["--warehouse", wh, "--db-url", url])
    finally:
        holder.release()
    assert code == EXIT_CODES["locked"] == 4
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "locked" and "another run holds the lock" in out["error"]
