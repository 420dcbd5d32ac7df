"""The reference for tests/test_backfill.py: the weekly job run once per week folder, one run at
a time, in its own process (its own Spark session), so that it runs beside the backfill. It
compiles its expressions as the job does, while the backfill runs in the suite's interpreting
session (tests.helpers.SMALL_DATA_CONF): the lead-by-lead comparison also checks that both
modes give the same leads over 26 weeks of new, changed, removed and returning providers.

    python -m tests.backfill_reference WAREHOUSE FOLDER [FOLDER ...]
"""

from __future__ import annotations

import sys

from leadpipe.config import load_settings, load_sources
from leadpipe.pipeline import run_weekly
from leadpipe.session import build_session


def main(argv: list[str]) -> int:
    warehouse, *folders = argv
    spark = build_session(
        "backfill-reference",
        master="local[2]",
        extra_conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.databricks.delta.snapshotPartitions": "1",
        },
        log_level="ERROR",
    )
    sources, settings = load_sources(), load_settings()
    for i, folder in enumerate(folders):
        r = run_weekly(spark, sources, folder, warehouse, None, settings, run_id=f"week{i + 1}", quality=False)
        if not r.ok:
            print(r.state.to_json(), file=sys.stderr)
            return 1
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
