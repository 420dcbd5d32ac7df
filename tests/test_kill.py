"""Real deaths: the job SIGKILLs itself (and its JVM) at each fault point, then runs again.

For every point: week 1 ran; week 2 is killed at the point; week 2 runs again. PostgreSQL must
then hold exactly the lead_ids of an uninterrupted run, once each, and the Delta leads table must
equal the uninterrupted run's (active set, first_seen, removed_on, record_hash). The killed run
is a separate process started in a session of its own (``LEADPIPE_FAULT``, faults.py); the runs
around it use the test session's Spark.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from leadpipe.config import load_settings
from leadpipe.pipeline import run_weekly
from leadpipe.postgres import DbTarget
from leadpipe.sample import generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class World:
    tmp: Path
    conf: Path
    weeks: list[dict]
    base_wh: Path  # the warehouse after week 1
    base_db: str  # a database holding week 1's delivery (a template)
    state2: list  # leads table after weeks 1, 2 (uninterrupted)
    ids2: set[str]  # PostgreSQL lead_ids after weeks 1, 2
    state3: list
    ids3: set[str]


def leads_state(spark, wh: Path) -> list:
    rows = spark.read.format("delta").load(str(wh / "leads"))
    cols = ["lead_id", "is_active", "first_seen", "removed_on", "record_hash"]
    return sorted(tuple(r) for r in rows.select(*cols).collect())


def pg_ids(db: DbTarget) -> set[str]:
    with db.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT lead_id FROM leads").fetchall()]
    assert len(ids) == len(set(ids))
    return set(ids)


def new_db(pg_server, template: str | None = None) -> DbTarget:
    name = f"k_{uuid.uuid4().hex[:12]}"
    with pg_server.target().connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return pg_server.target(name)


@pytest.fixture(scope="module")
def world(spark, sources, pg_server, tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("kill")
    conf = tmp / "conf"
    shutil.copytree(ROOT / "conf", conf)
    settings = yaml.safe_load((conf / "settings.yaml").read_text())
    settings["spark"].update({"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"})
    settings["spark"].pop("spark.driver.memory", None)
    (conf / "settings.yaml").write_text(yaml.safe_dump(settings))
    manifest = generate(tmp / "sample", weeks=3, providers=60, seed=23)
    weeks = manifest["weeks"]
    ref = load_settings(conf)
    wh = tmp / "reference"
    db = new_db(pg_server)
    assert run_weekly(spark, sources, weeks[0]["input"], str(wh), db, ref, run_id="ref-1", quality=False).ok
    base_wh = tmp / "base"
    shutil.copytree(wh, base_wh)
    base = new_db(pg_server, template=db.dbname)
    assert run_weekly(spark, sources, weeks[1]["input"], str(wh), db, ref, run_id="ref-2", quality=False).ok
    state2, ids2 = leads_state(spark, wh), pg_ids(db)
    assert run_weekly(spark, sources, weeks[2]["input"], str(wh), db, ref, run_id="ref-3", quality=False).ok
    return World(tmp, conf, weeks, base_wh, base.dbname, state2, ids2, leads_state(spark, wh), pg_ids(db))


def run_killed(world: World, point: str, input_dir: str, wh: Path, db: DbTarget, run_id: str) -> None:
    """The job as its own process (and process group), SIGKILLed by itself at ``point``."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "LEADPIPE_FAULT": point}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    cmd = [
        sys.executable,
        "jobs/weekly_leads.py",
        "--input",
        input_dir,
        "--warehouse",
        str(wh),
        "--db-url",
        f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}",
        "--conf-dir",
        str(world.conf),
        "--master",
        "local[2]",
        "--no-quality",
        "--run-id",
        run_id,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    assert f"fault injection: LEADPIPE_FAULT={point.split(':')[0]}" in proc.stderr
    assert proc.stdout.strip() == "" or not proc.stdout.strip().splitlines()[-1].startswith('{"run_id"')


def fresh_copy(world: World, pg_server, name: str) -> tuple[Path, DbTarget]:
    wh = world.tmp / name
    shutil.copytree(world.base_wh, wh)
    return wh, new_db(pg_server, template=world.base_db)


def run_statuses(db: DbTarget) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute("SELECT run_id, status FROM pipeline_runs").fetchall())


def staging_tables(db: DbTarget) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE '%stage%'")]


@pytest.mark.parametrize(
    "point",
    ["after_read", "after_bronze", "after_merge", "during_staging", "after_pg_commit", "at_end"],
)
def test_week_2_killed_at_each_point_then_run_again(spark, sources, pg_server, world, point):
    wh, db = fresh_copy(world, pg_server, f"wh-{point}")
    run_killed(world, point, world.weeks[1]["input"], wh, db, run_id=f"killed-{point}")
    if point == "during_staging":
        assert staging_tables(db), "the kill left no staging table: it did not die mid-delivery"
    settings = load_settings(world.conf)
    again = run_weekly(spark, sources, world.weeks[1]["input"], str(wh), db, settings, run_id="again", quality=False)
    assert again.ok, again.summary
    assert pg_ids(db) == world.ids2
    assert leads_state(spark, wh) == world.state2
    assert staging_tables(db) == []
    statuses = run_statuses(db)
    assert statuses["again"] == "succeeded"
    # a run that died before writing its end is marked abandoned by the next run
    assert statuses[f"killed-{point}"] == ("succeeded" if point == "at_end" else "abandoned")
    if point in ("after_pg_commit", "at_end"):
        assert again.summary["delivered"] == 0  # the killed run had delivered everything


def test_week_2_killed_after_its_merges_then_week_3_directly(spark, sources, pg_server, world):
    wh, db = fresh_copy(world, pg_server, "wh-then-week3")
    run_killed(world, "after_merge:3", world.weeks[1]["input"], wh, db, run_id="killed-w2")  # all 3 sources merged
    settings = load_settings(world.conf)
    week3 = run_weekly(spark, sources, world.weeks[2]["input"], str(wh), db, settings, run_id="w3", quality=False)
    assert week3.ok, week3.summary
    assert pg_ids(db) == world.ids3  # week 2's new leads were delivered by week 3's run
    assert leads_state(spark, wh) == world.state3


def test_two_weeks_in_one_input_killed_after_the_first_merge(spark, sources, pg_server, world):
    both = world.tmp / "weeks-1-2"
    both.mkdir()
    for week in world.weeks[:2]:
        for f in Path(week["input"]).iterdir():
            shutil.copy(f, both / f.name)
    wh, db = world.tmp / "wh-two-weeks", new_db(pg_server)
    run_killed(world, "after_merge", str(both), wh, db, run_id="killed-two")
    settings = load_settings(world.conf)
    again = run_weekly(spark, sources, str(both), str(wh), db, settings, run_id="again-two", quality=False)
    assert again.ok, again.summary
    first = {(o.source, o.snapshot_date.isoformat()): o.status for o in again.state.snapshots}
    assert list(first.values()).count("already_applied") == 1  # the one MERGE the killed run made
    assert pg_ids(db) == world.ids2
    assert leads_state(spark, wh) == world.state2
