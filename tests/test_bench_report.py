"""The benchmark's choice of job runs (``--runs``) and what BENCHMARKS.md then says. Pure Python:
results are built as bench.py stores them in results.json; nothing is measured."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import pytest

from leadpipe.bench import (
    JOB_RUNS,
    RESULTS_OPEN,
    JobRun,
    ProcessRun,
    SizeResult,
    compute_targets,
    embedded_results,
    load_results,
    main,
    parse_runs,
    render_markdown,
    save_results,
    seed_results,
    write_markdown,
)


def _process(wall: float) -> ProcessRun:
    return ProcessRun("job", ["spark-submit"], wall, 0, 1000.0, 600.0, "java", {}, 10, "o.log", "e.log")


def _size(rows: int, jobs: list[JobRun], left_out: list[str]) -> dict:
    result = SizeResult(rows, "2026-12-03T19:00:00+00:00", {"cpu": "test"}, jobs=jobs, commit="abc1234")
    result.baselines_skipped = True
    result.runs_left_out = left_out
    return asdict(result)


def test_runs_come_back_in_the_benchmarks_order():
    assert parse_runs("replay, week-1") == ("week-1", "replay")
    assert parse_runs(",".join(reversed(JOB_RUNS))) == JOB_RUNS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("week-2,replay", "week-1 is always run"),
        ("week-1,no-change", "no-change needs week-2"),
        ("week-1,weekly", "unknown weekly"),
    ],
)
def test_an_impossible_choice_of_runs_is_refused_with_the_reason(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_runs(text)


def test_a_replay_of_week_1_and_the_runs_left_out_are_said():
    week1 = JobRun("week-1", ".local/bench/data/1000/week-1", _process(60.0), status="succeeded", new=1000)
    replay = JobRun("replay", ".local/bench/data/1000/week-1", _process(9.5), status="succeeded")
    replay.snapshot_statuses = ["tx_hhs 2024-01-05: already_applied"]
    entry = _size(1000, [week1, replay], ["week-2", "no-change"])
    text = render_markdown({"sizes": {"1000": entry}})
    assert "Job runs left out: week-2, no-change not run (--runs week-1,replay)." in text
    assert "| 1,000 | 60.0 | - | - | 9.5 (week 1) |" in text  # the replay column says which week
    assert "The replay (week 1 again) did nothing (every snapshot `already_applied`, 0 delivered)." in text
    checks = {c.name.split(" ")[0]: c for c in compute_targets({"1000": entry})}
    assert checks["replay"].measured == 9.5
    assert checks["replay"].met is True
    assert checks["replay"].note == "JVM start-up included; week 1 replayed"
    assert checks["no-change"].shown == "not run (--runs)"
    assert checks["no-change"].met is None


def test_a_replay_of_week_2_is_named_so():
    week1 = JobRun("week-1", "d/week-1", _process(60.0), status="succeeded")
    week2 = JobRun("week-2", "d/week-2", _process(61.0), status="succeeded")
    replay = JobRun("replay", "d/week-2", _process(45.0), status="succeeded", delivered=3)
    replay.snapshot_statuses = ["tx_hhs 2024-01-12: applied"]
    entry = _size(1000, [week1, week2, replay], [])
    text = render_markdown({"sizes": {"1000": entry}})
    assert "Job runs left out" not in text
    assert "The replay (week 2 again) DID SOMETHING: tx_hhs 2024-01-12: applied; delivered 3." in text
    replay_check = next(c for c in compute_targets({"1000": entry}) if c.name.startswith("replay"))
    assert (replay_check.met, replay_check.note) == (False, "JVM start-up included")


def test_a_no_change_run_that_was_asked_for_but_never_started_is_not_called_left_out():
    week1 = JobRun("week-1", "d/week-1", _process(60.0), status="succeeded")
    week2 = JobRun("week-2", "d/week-2", _process(61.0), status="failed")
    week2.process.exit_code = 1  # so no-change, asked for, was never started
    entry = _size(1000, [week1, week2], ["replay"])  # --runs week-1,week-2,no-change
    check = next(c for c in compute_targets({"1000": entry}) if c.name.startswith("no-change"))
    assert (check.shown, check.met) == ("not measured", None)


def _two_sizes() -> dict:
    week1 = JobRun("week-1", "d/week-1", _process(60.0), status="succeeded", new=1000)
    week1.timings = {"discover": 1.0, "state": 2.0, "read": 30.0, "bronze": 5.0, "deliver": 9.0}  # not sorted
    big = JobRun("week-1", "d/week-1", _process(600.0), status="succeeded", new=100000)
    small = _size(1000, [week1], ["week-2", "replay", "no-change"])
    # '-->' or '--!>' would end an HTML comment; the opening marker would be taken for the kept results
    small["failures"] = [f"a run said --> and --!> and --runs and {RESULTS_OPEN}"]
    return {"sizes": {"1000": small, "100000": _size(100000, [big], ["week-2", "replay", "no-change"])}}


def test_benchmarks_md_keeps_the_results_it_was_rendered_from(tmp_path):
    results = _two_sizes()
    md = tmp_path / "BENCHMARKS.md"
    write_markdown(md, results)
    text = md.read_text()
    assert text.startswith(render_markdown(results).rstrip())  # what a reader sees is unchanged
    kept = text[text.rindex(RESULTS_OPEN) :]
    assert kept.count("-->") == 1 and kept.endswith("-->\n")  # the comment ends once, at the end of the file
    assert embedded_results(text) == results
    seeded = embedded_results(text)
    assert list(seeded["sizes"]["1000"]["jobs"][0]["timings"]) == ["discover", "state", "read", "bronze", "deliver"]
    assert render_markdown(seeded) == render_markdown(results)  # the stage rows come back in their order
    assert embedded_results(render_markdown(results)) is None  # a file from before: nothing kept


def test_a_clone_without_results_json_starts_from_benchmarks_md(tmp_path):
    results = _two_sizes()
    md = tmp_path / "BENCHMARKS.md"
    write_markdown(md, results)
    results_json = tmp_path / "bench" / "results.json"
    assert seed_results(results_json, md) is True
    assert load_results(results_json) == results
    # results.json of this clone wins over the committed file
    kept = {"sizes": {"1000": results["sizes"]["1000"]}}
    save_results(results_json, kept)
    assert seed_results(results_json, md) is False
    assert load_results(results_json) == kept
    results_json.write_text("{not json")  # unreadable: the kept results again, not an empty start
    assert seed_results(results_json, md) is True
    assert load_results(results_json) == results


def test_report_only_rewrites_benchmarks_md_from_the_kept_results(tmp_path, capsys):
    results = _two_sizes()
    md = tmp_path / "BENCHMARKS.md"
    write_markdown(md, results)
    md.write_text(md.read_text().replace("# Benchmarks", "# stale heading"))
    out = tmp_path / "bench"
    assert main(["--report-only", "--out", str(out), "--markdown", str(md)]) == 0
    assert md.read_text().startswith("# Benchmarks")
    assert embedded_results(md.read_text()) == results
    assert load_results(out / "results.json") == results


def test_growth_between_sizes_is_judged_only_when_both_were_measured_at_one_commit():
    small = _size(1000, [JobRun("week-1", "d/week-1", _process(10.0), status="succeeded")], [])
    big = _size(10000, [JobRun("week-1", "d/week-1", _process(200.0), status="succeeded")], [])
    big["commit"] = "abc1234-dirty"  # a dirty tree counts as its commit
    (same,) = [c for c in compute_targets({"1000": small, "10000": big}) if "/" in c.size]
    assert (same.measured, same.met, same.applies, same.note) == (2.0, False, True, "")
    big["commit"], big["measured_at"] = "def5678", "2026-12-06T19:00:00+00:00"
    (mixed,) = [c for c in compute_targets({"1000": small, "10000": big}) if "/" in c.size]
    assert (mixed.measured, mixed.met, mixed.applies) == (2.0, None, False)
    assert mixed.note == "not judged: measured at different commits (def5678 on 2026-12-06, abc1234 on 2026-12-03)"
    assert "| 10,000 / 1,000 | week 1 wall ratio" in render_markdown({"sizes": {"1000": small, "10000": big}})


def test_the_commit_measured_is_dirty_for_changed_code_but_not_for_the_harness_output(tmp_path, monkeypatch):
    import subprocess

    from leadpipe import bench

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n")
    (tmp_path / "job.py").write_text("x = 1\n")
    git("add", ".")
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-qm",
        "first",
    )
    head = git("rev-parse", "--short", "HEAD")
    monkeypatch.setattr(bench, "PROJECT_DIR", tmp_path)
    assert bench.code_commit() == head
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\nrewritten by the harness\n")
    (tmp_path / "scratch.txt").write_text("untracked\n")
    assert bench.code_commit() == head
    (tmp_path / "job.py").write_text("x = 2\n")
    assert bench.code_commit() == f"{head}-dirty"
