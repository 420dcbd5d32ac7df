"""Archive: processed files move to <archive>/<snapshot date>/ after delivery, and only then.

Real files, a real warehouse and a real PostgreSQL; the kill before archive is in test_kill.py.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from datetime import date
from pathlib import Path

import pytest

from leadpipe.archive import archive_files
from leadpipe.discover import discover
from leadpipe.pipeline import run_weekly
from tests.helpers import pg_lead_ids

pytestmark = pytest.mark.integration

TX = "07-07-2023 Texas DHHS.csv"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_applied_files_move_after_delivery_and_the_rest_stay(spark, sources, settings, db, tmp_path, real_dir):
    active, archive = tmp_path / "active", tmp_path / "historical"
    shutil.copytree(real_dir, active)
    (active / TX).write_bytes(gzip.compress((real_dir / TX).read_bytes()))  # rejected: Texas fails
    (active / "notes.txt").write_text("not an export")  # unmatched
    result = run_weekly(spark, sources, str(active), str(tmp_path / "wh"), db, settings, archive=str(archive))
    s = result.summary
    assert s["status"] == "partial" and s["archived"] == 2
    moved = {p.name for p in (archive / "2023-07-07").iterdir()}
    assert moved == {f.name for f in real_dir.iterdir() if f.name != TX}
    for name in moved:  # the same bytes, and gone from the active folder
        assert sha(archive / "2023-07-07" / name) == sha(real_dir / name)
        assert not (active / name).exists()
    assert sorted(p.name for p in active.iterdir()) == sorted([TX, "notes.txt"])  # failed and unmatched stay
    by_name = {f["name"]: f for f in s["files"]}
    assert by_name[TX]["archived_to"] is None and by_name["notes.txt"]["archived_to"] is None
    assert by_name["07-07-2023 Oklahoma Human Services.csv"]["archived_to"].endswith(
        "historical/2023-07-07/07-07-2023 Oklahoma Human Services.csv"
    )

    # the same file dropped again: recognised as applied, its archive copy found, and it is moved
    shutil.copy(real_dir / "07-07-2023 Oklahoma Human Services.csv", active)
    (active / TX).unlink()
    again = run_weekly(spark, sources, str(active), str(tmp_path / "wh"), db, settings, archive=str(archive))
    assert [o.status for o in again.state.snapshots] == ["already_applied"]
    assert again.summary["archived"] == 1 and again.summary["delivered"] == 0
    assert [p.name for p in active.iterdir()] == ["notes.txt"]
    assert len(pg_lead_ids(db)) == 149  # Nevada 100 + Oklahoma 49, each delivered once


def test_nothing_is_archived_without_a_delivery(spark, sources, settings, tmp_path, real_dir):
    active = tmp_path / "active"
    shutil.copytree(real_dir, active)
    result = run_weekly(spark, sources, str(active), str(tmp_path / "wh"), None, settings, archive=str(tmp_path / "h"))
    assert result.ok and result.summary["archived"] == 0
    assert len(list(active.iterdir())) == 3 and not (tmp_path / "h").exists()


def test_an_archive_copy_with_other_bytes_is_never_overwritten(spark, sources, tmp_path, real_dir):
    active, archive = tmp_path / "active", tmp_path / "historical"
    active.mkdir()
    shutil.copy(real_dir / TX, active)
    (archive / "2023-07-07").mkdir(parents=True)
    (archive / "2023-07-07" / TX).write_bytes(b"someone else's file")
    files = discover(spark, str(active), {"tx_hhs": sources["tx_hhs"]}).files
    result = archive_files(spark, files, str(active), str(archive))
    assert result.targets == [None] and "other bytes" in result.conflicts[0]
    assert (active / TX).exists() and (archive / "2023-07-07" / TX).read_bytes() == b"someone else's file"
    # from inside the archive itself: the file is where it belongs and is never deleted
    (archive / "2023-07-07" / TX).write_bytes((real_dir / TX).read_bytes())
    inside = discover(spark, str(archive / "2023-07-07"), {"tx_hhs": sources["tx_hhs"]}).files
    assert inside[0].snapshot_date == date(2023, 7, 7)
    assert archive_files(spark, inside, str(archive / "2023-07-07"), str(archive)).targets[0] is not None
    assert (archive / "2023-07-07" / TX).exists()
