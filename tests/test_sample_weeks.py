"""The backfill benchmark's data (sample.generate_weeks) and how its per-snapshot seconds are read
(bench_backfill.snapshot_seconds). Pure Python: the files are read back with the csv module."""

from __future__ import annotations

import csv
import json

from leadpipe.bench_backfill import BackfillResult, backfill_markdown, snapshot_seconds
from leadpipe.sample import generate_weeks

KEY = {"Nevada": "Credential Number", "Oklahoma": "Type License", "Texas": "Operation #"}


def _keys(path) -> list[str]:
    with open(path, encoding="cp1252", newline="") as fh:
        rows = list(csv.DictReader(fh))
    column = next(v for k, v in KEY.items() if k in path.name)
    return [r[column] for r in rows]


def test_weeks_are_full_snapshots_whose_differences_are_the_counted_churn(tmp_path):
    counts = generate_weeks(tmp_path, rows=3000, weeks=6, churn=0.03)
    assert json.loads((tmp_path / "weeks.json").read_text()) == counts
    assert len(list(tmp_path.glob("*.csv"))) == 6 * 3
    for source, agency in (("nv_dpbh", "Nevada"), ("ok_dhs", "Oklahoma"), ("tx_hhs", "Texas")):
        files = sorted(tmp_path.glob(f"*{agency}*.csv"), key=lambda p: counts["dates"].index(_iso(p.name)))
        weeks = [_keys(f) for f in files]
        seen: set[str] = set()
        for w, keys in enumerate(weeks):
            c = counts["sources"][source][w]
            assert len(keys) == len(set(keys)) == c["rows"]  # every provider once, as counted
            if w == 0:
                assert c == {"rows": len(keys), "new": 0, "changed": 0, "removed": 0}
            else:
                before = set(weeks[w - 1])
                assert len(set(keys) - before) == c["new"] > 0
                assert len(before - set(keys)) == c["removed"] > 0
                assert not (set(keys) - before) & seen  # removed for good: a key never comes back
            seen |= set(keys)
        assert sum(c["changed"] for c in counts["sources"][source]) > 0
        shown = 0
        for w in range(1, len(files)):  # a drawn change shows as a row whose cells differ, key kept
            before, now = _rows(files[w - 1]), _rows(files[w])
            differ = sum(1 for k in before.keys() & now.keys() if before[k] != now[k])
            assert differ <= counts["sources"][source][w]["changed"]  # some do not show (Nevada has no capacity)
            shown += differ
        assert shown > 0


def test_the_same_arguments_write_the_same_bytes(tmp_path):
    assert generate_weeks(tmp_path / "a", rows=500, weeks=3) == generate_weeks(tmp_path / "b", rows=500, weeks=3)
    files = sorted((tmp_path / "a").glob("*.csv"))
    assert len(files) == 9
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()


def _rows(path) -> dict[str, list[str]]:
    column = next(v for k, v in KEY.items() if k in path.name)
    with open(path, encoding="cp1252", newline="") as fh:
        return {r[column]: list(r.values()) for r in csv.DictReader(fh)}


def _iso(name: str) -> str:
    m, d, y = name[:10].split("-")
    return f"{y}-{m}-{d}"


def test_snapshot_seconds_are_the_differences_of_the_progress_lines():
    log = "\n".join(
        [
            "2026-11-26 10:00:00,000 INFO leadpipe.pipeline: validate: tx_hhs 2024-01-05: 30 read",
            "2026-11-26 10:00:09,000 INFO leadpipe.pipeline: progress: snapshot 1/3 (2024-01-05): tx_hhs applied; "
            "30 row(s) read; 9 s elapsed, about 18 s left",
            "... progress: snapshot 2/3 (2024-01-12): tx_hhs applied, ok_dhs held; 64 row(s) read; 13.4 s elapsed, "
            "about 6 s left",
            "... progress: snapshot 2/3 (2024-01-12): tx_hhs applied, ok_dhs held; 64 row(s) read; 13.4 s elapsed, "
            "about 6 s left",  # the same line again (stdout and stderr both read): counted once
            "... progress: snapshot 3/3 (2024-01-19): nothing to do; 0 row(s) read; 20 s elapsed, about 0 s left",
        ]
    )
    assert snapshot_seconds(log) == [9.0, 4.4, 6.6]


def test_the_backfill_section_says_what_was_measured():
    entry = BackfillResult(100, 3, "2026-11-26T17:13:05+00:00", commit="abc1234", data_folder="d/backfill-3x100")
    entry = {**entry.__dict__, "data_bytes": 3 * 2**20, "expected": {"rows": 300, "new": 104, "removed": 2}}
    entry.update(process={"wall_s": 30.0, "exit_code": 0}, status="succeeded", rows_read=300, new=104, removed=2)
    entry.update(applied=9, per_snapshot_s=[12.0, 9.0, 9.0], errors=["new 104, the generator wrote 105"])
    text = "\n".join(backfill_markdown(entry))
    assert "at commit abc1234. Data: `d/backfill-3x100` (3 MB, 9 files;" in text
    assert "| rows read | 300 (generator: 300) |" in text
    assert "| seconds per snapshot date: median of the others | 9.0 |" in text
    assert "| error | new 104, the generator wrote 105 |" in text
