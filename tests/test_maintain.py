"""Maintenance refuses a VACUUM retention that could delete files a delivery still needs (the
compaction itself is exercised after the 52-week backfill in tests/test_backfill.py)."""

from __future__ import annotations

import pytest

from leadpipe.maintain import maintain
from leadpipe.warehouse import Warehouse


def test_vacuum_retention_below_a_week_is_refused(spark, tmp_path):
    with pytest.raises(ValueError, match="at least 168"):
        maintain(spark, Warehouse(str(tmp_path / "wh")), retain_hours=1)
