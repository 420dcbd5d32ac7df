"""Real deaths: the job SIGKILLs itself (and its JVM) at each fault point, then runs again.

For every point: week 1 ran; week 2 is killed at the point; week 2 runs again. PostgreSQL must
then hold exactly the lead_ids of an uninterrupted run, once each, and the Delta leads table must
equal the uninterrupted run's (active set, first_seen, removed_on, record_hash). The killed run
is a separate process started in a session of its own (``LEADPIPE_FAULT``, faults.py); the runs
around it use the test session's Spark.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from leadpipe import faults
from leadpipe.config import load_settings, load_sources
from leadpipe.pipeline import run_weekly
from leadpipe.postgres import DbTarget
from leadpipe.sample import generate
from tests.helpers import SMALL_DATA_CONF, job_env, pg_lead_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


POINTS = [p for p in faults.POINTS if p != "before_archive"]
# before_archive: its own test below (the weeks' inputs are shared; archiving would move them).
# during_staging: the run killed there delivers through a staging table (delivery_method: copy);
# every other one, and every run after a kill, the default way (direct).
STAGED = {"during_staging"}


@dataclass
class Killed:
    """A killed run: where it ran, and how its process ended."""

    wh: Path
    db: DbTarget
    input: str
    run_id: str
    point: str
    returncode: int | None = None
    stderr: str = ""


@dataclass
class World:
    tmp: Path
    conf: Path
    weeks: list[dict]
    ids1: set[str]  # PostgreSQL lead_ids after week 1
    state2: list  # leads table after weeks 1, 2 (uninterrupted)
    ids2: set[str]  # PostgreSQL lead_ids after weeks 1, 2
    state3: list
    ids3: set[str]
    killed: dict[str, Killed]  # test case -> its killed run


def leads_state(spark, wh: Path) -> list:
    rows = spark.read.format("delta").load(str(wh / "leads"))
    cols = ["lead_id", "is_active", "first_seen", "removed_on", "record_hash"]
    return sorted(tuple(r) for r in rows.select(*cols).collect())


def new_db(pg_server, template: str | None = None) -> DbTarget:
    name = f"k_{uuid.uuid4().hex[:12]}"
    with pg_server.target().connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return pg_server.target(name)


@pytest.fixture(scope="module")
def kill_sources(world):
    return load_sources(world.conf)


@pytest.fixture(scope="module")
def world(spark, pg_server, tmp_path_factory) -> World:
    """Week 1 is applied once; every killed run starts from a copy of it (warehouse folder and
    PostgreSQL database), two at a time in the background (one test goes on from a copy of what a
    killed run left), while the uninterrupted reference runs weeks 2 and 3 in this process. One source (Texas) keeps the runs short: the protocol is
    per source, the same for any number of them (test_job and test_state_of_record run all three)."""
    tmp = tmp_path_factory.mktemp("kill")
    conf = tmp / "conf"
    shutil.copytree(ROOT / "conf", conf)
    for other in ("nv_dpbh", "ok_dhs"):
        (conf / "sources" / f"{other}.yaml").unlink()
    settings = yaml.safe_load((conf / "settings.yaml").read_text())
    settings["spark"].update(
        {
            "spark.sql.shuffle.partitions": "2",
            "spark.ui.enabled": "false",
            "spark.databricks.delta.snapshotPartitions": "1",
            **SMALL_DATA_CONF,
        }
    )
    settings["spark"].pop("spark.driver.memory", None)
    settings["expected_sources"] = ["tx_hhs"]  # the only source left
    (conf / "settings.yaml").write_text(yaml.safe_dump(settings))
    staged_conf = tmp / "conf-staged"
    shutil.copytree(conf, staged_conf)
    (staged_conf / "settings.yaml").write_text(yaml.safe_dump({**settings, "delivery_method": "copy"}))
    manifest = generate(tmp / "sample", weeks=3, providers=90, seed=23)
    weeks = manifest["weeks"]
    for week in weeks:
        for f in [*Path(week["input"]).glob("*Nevada*"), *Path(week["input"]).glob("*Oklahoma*")]:
            f.unlink()
    sources = load_sources(conf)
    ref = load_settings(conf)
    wh = tmp / "reference"
    db = new_db(pg_server)
    assert run_weekly(spark, sources, weeks[0]["input"], str(wh), db, ref, run_id="ref-1", quality=False).ok

    def from_week1(name: str, point: str, input_dir: str) -> Killed:
        copy = tmp / name
        shutil.copytree(wh, copy)
        return Killed(copy, new_db(pg_server, template=db.dbname), input_dir, f"killed-{name}", point)

    ids1 = pg_lead_ids(db)
    w2 = weeks[1]["input"]
    killed = {p: from_week1(p, p, w2) for p in POINTS}
    both = tmp / "weeks-1-2"
    both.mkdir()
    for week in weeks[:2]:
        for f in Path(week["input"]).iterdir():
            shutil.copy(f, both / f.name)
    killed["two-weeks"] = Killed(tmp / "two-weeks", new_db(pg_server), str(both), "killed-two-weeks", "after_merge")
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(run_killed, staged_conf if k.point in STAGED else conf, k) for k in killed.values()]
        assert run_weekly(spark, sources, w2, str(wh), db, ref, run_id="ref-2", quality=False).ok
        state2, ids2 = leads_state(spark, wh), pg_lead_ids(db)
        assert run_weekly(spark, sources, weeks[2]["input"], str(wh), db, ref, run_id="ref-3", quality=False).ok
        for f in done:
            f.result()
    # week 2 merged, not delivered: what the after_merge kill left (its warehouse and database,
    # copied before its own test runs week 2 again on them), for week 3 to run on directly
    k = killed["after_merge"]
    then = tmp / "then-week-3"
    shutil.copytree(k.wh, then)
    killed["then-week-3"] = replace(k, wh=then, db=new_db(pg_server, template=k.db.dbname))
    return World(tmp, conf, weeks, ids1, state2, ids2, leads_state(spark, wh), pg_lead_ids(db), killed)


def run_killed(conf: Path, k: Killed, extra: tuple[str, ...] = ()) -> None:
    """The job as its own process (and process group), SIGKILLed by itself at ``k.point``."""
    env = job_env(LEADPIPE_FAULT=k.point)
    cmd = [
        sys.executable,
        "jobs/weekly_leads.py",
        "--input",
        k.input,
        "--warehouse",
        str(k.wh),
        "--db-url",
        f"postgresql://{k.db.user}@{k.db.host}:{k.db.port}/{k.db.dbname}",
        "--conf-dir",
        str(conf),
        "--master",
        "local[2]",
        "--no-quality",
        "--run-id",
        k.run_id,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, start_new_session=True)
    k.returncode, k.stderr = proc.returncode, proc.stderr


def assert_killed(k: Killed) -> None:
    """The process died by SIGKILL at its point, before printing a summary."""
    assert k.returncode == -signal.SIGKILL, (k.returncode, k.stderr[-3000:])
    assert f"fault injection: LEADPIPE_FAULT={k.point.split(':')[0]}" in k.stderr


def run_statuses(db: DbTarget) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute("SELECT run_id, status FROM pipeline_runs").fetchall())


def staging_tables(db: DbTarget) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE '%stage%'")]


@pytest.mark.parametrize("point", POINTS)
def test_week_2_killed_at_each_point_then_run_again(spark, kill_sources, world, point):
    k = world.killed[point]
    assert_killed(k)
    if point == "before_pg_commit":  # the COPY had put the leads in PostgreSQL; none was committed
        held = re.search(
            r"PostgreSQL holds (\d+) row\(s\) of the COPY into public\.leads in an open transaction", k.stderr
        )
        assert held and int(held.group(1)) == len(world.ids2 - world.ids1), k.stderr[-3000:]
        assert staging_tables(k.db) == []
        assert pg_lead_ids(k.db) == world.ids1
    if point == "during_staging":
        stages = staging_tables(k.db)
        assert len(stages) == 1, "the kill left no staging table: it did not die mid-delivery"
        with k.db.connect() as conn:  # rows had landed in it, and none reached the leads table
            assert conn.execute(f'SELECT count(*) FROM "{stages[0]}"').fetchone()[0] > 0
        assert pg_lead_ids(k.db) == world.ids1
    settings = load_settings(world.conf)
    again = run_weekly(spark, kill_sources, k.input, str(k.wh), k.db, settings, run_id="again", quality=False)
    assert again.ok, again.summary
    assert pg_lead_ids(k.db) == world.ids2
    assert leads_state(spark, k.wh) == world.state2
    assert staging_tables(k.db) == []
    statuses = run_statuses(k.db)
    assert statuses["again"] == "succeeded"
    # a run that died before writing its end is marked abandoned by the next run
    assert statuses[k.run_id] == ("succeeded" if point == "at_end" else "abandoned")
    if point in ("after_pg_commit", "at_end"):
        assert again.summary["delivered"] == 0  # the killed run had delivered everything


def test_week_2_killed_after_its_merges_then_week_3_directly(spark, kill_sources, world):
    k = world.killed["then-week-3"]
    assert_killed(k)
    settings = load_settings(world.conf)
    week3 = run_weekly(
        spark, kill_sources, world.weeks[2]["input"], str(k.wh), k.db, settings, run_id="w3", quality=False
    )
    assert week3.ok, week3.summary
    assert pg_lead_ids(k.db) == world.ids3  # week 2's new leads were delivered by week 3's run
    assert leads_state(spark, k.wh) == world.state3


def test_two_weeks_in_one_input_killed_after_the_first_merge(spark, kill_sources, world):
    k = world.killed["two-weeks"]
    assert_killed(k)
    settings = load_settings(world.conf)
    again = run_weekly(spark, kill_sources, k.input, str(k.wh), k.db, settings, run_id="again-two", quality=False)
    assert again.ok, again.summary
    statuses = [o.status for o in again.state.snapshots]
    assert statuses.count("already_applied") == 1  # the one MERGE the killed run made
    assert pg_lead_ids(k.db) == world.ids2
    assert leads_state(spark, k.wh) == world.state2


def test_killed_before_archive_then_run_again(spark, kill_sources, world, pg_server, tmp_path):
    """Killed after delivery, before the first file moved: every file is still in the active
    folder; the next run recognises the snapshot as applied, delivers nothing and moves them."""
    active, archive = tmp_path / "active", tmp_path / "historical"
    shutil.copytree(world.weeks[0]["input"], active)
    names = sorted(p.name for p in active.iterdir())
    k = Killed(tmp_path / "wh", new_db(pg_server), str(active), "killed-archive", "before_archive")
    run_killed(world.conf, k, ("--archive", str(archive)))
    assert_killed(k)
    assert sorted(p.name for p in active.iterdir()) == names and not archive.exists()
    assert pg_lead_ids(k.db) == world.ids1  # delivered before the kill
    settings = load_settings(world.conf)
    again = run_weekly(
        spark,
        kill_sources,
        str(active),
        str(k.wh),
        k.db,
        settings,
        run_id="again-archive",
        quality=False,
        archive=str(archive),
    )
    assert again.ok, again.summary
    assert {o.status for o in again.state.snapshots} == {"already_applied"} and again.summary["delivered"] == 0
    assert list(active.iterdir()) == []
    (day,) = archive.iterdir()
    assert sorted(p.name for p in day.iterdir()) == names
    assert pg_lead_ids(k.db) == world.ids1
