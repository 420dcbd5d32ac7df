"""What the job promises around the MERGE: destructive snapshots held, ids that survive rule
changes, one writer at a time, PostgreSQL outages, and the hardening of what reaches SQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from delta.tables import DeltaTable
from psycopg import sql
from pyspark.sql import functions as F

from leadpipe import faults
from leadpipe.canonical import lead_id_for
from leadpipe.config import load_settings, load_sources
from leadpipe.deliver import StagingIncomplete, _publish, ensure_tables
from leadpipe.pipeline import check_run_id, run_weekly
from leadpipe.postgres import DatabaseUnreachable, DbTarget, EmbeddedPostgres
from leadpipe.runs import LockLost, RunLock, RunLocked, lock_key
from leadpipe.sample import generate
from tests.helpers import job_env, pg_lead_ids, real_week

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_a_truncated_snapshot_is_held_while_the_others_apply(spark, sources, settings, db, tmp_path, real_dir):
    wh = str(tmp_path / "wh")
    first = run_weekly(spark, sources, str(real_dir), wh, db, settings, run_id="full", quality=False)
    assert first.ok and first.summary["delivered"] == 248
    # next week: Nevada with one new provider, Oklahoma as before, Texas cut off after 10 of its 99 records
    cut = real_week(real_dir, tmp_path / "cut", "07-14-2023", texas_records=10)
    nevada = next(Path(cut).glob("*Nevada*"))
    first_row = nevada.read_bytes().split(b"\r\n")[1]
    assert b",1106-22," in first_row
    text = nevada.read_bytes()  # the real export has no line end after its last record
    nevada.write_bytes(text.rstrip(b"\r\n") + b"\r\n" + first_row.replace(b",1106-22,", b",9999-23,"))
    held = run_weekly(spark, sources, cut, wh, db, settings, run_id="cut", quality=False)
    assert held.state.status == "partial" and held.state.exit_code == 3
    assert held.summary["delivered"] == 1  # the other sources merge and deliver
    assert lead_id_for("nv_dpbh", ["9999-23"]) in pg_lead_ids(db)
    outcome = {o.source: o for o in held.state.snapshots}
    assert outcome["tx_hhs"].status == "held"
    assert "has 10 row(s), fewer than 50% of the 99 of the applied snapshot 2023-07-07" in outcome["tx_hhs"].message
    assert "would mark 89 of 99 active lead(s) removed (89.9%, more than 20%)" in outcome["tx_hhs"].message
    assert "--apply-held tx_hhs" in outcome["tx_hhs"].message
    assert (outcome["nv_dpbh"].status, outcome["ok_dhs"].status) == ("applied", "applied")
    leads = spark.read.format("delta").load(f"{wh}/leads")
    assert leads.filter("source = 'tx_hhs' AND is_active").count() == 99  # nothing removed
    bronze = spark.read.format("delta").load(f"{wh}/bronze")
    assert bronze.filter("source = 'tx_hhs' AND snapshot_date = DATE'2023-07-14'").count() == 10  # rows kept
    with db.connect() as conn:
        assert conn.execute("SELECT status FROM pipeline_runs WHERE run_id = 'cut'").fetchone()[0] == "partial"

    # the operator looked at the file and applies it on purpose: only Texas is read and merged
    forced = run_weekly(
        spark, sources, cut, wh, db, settings, run_id="cut-forced", quality=False, apply_held={"tx_hhs"}
    )
    assert forced.ok, forced.summary
    outcome = {o.source: o for o in forced.state.snapshots}
    assert outcome["tx_hhs"].status == "applied" and outcome["tx_hhs"].removed == 89
    assert (outcome["nv_dpbh"].status, outcome["ok_dhs"].status) == ("already_applied", "already_applied")
    history = DeltaTable.forPath(spark, f"{wh}/leads").history(1).first()
    assert json.loads(history.userMetadata)["applied_on_purpose"] is True


def test_a_failed_duplicate_search_fails_the_date_and_the_next_run_applies_it(
    spark, sources, settings, db, tmp_path, real_dir, monkeypatch
):
    """The duplicate-key search runs on the written scratch rows; when it fails (storage gone
    under the run), no source of the date is merged, each says why, and the next run applies it."""
    from leadpipe import pipeline

    def broken(rows):
        raise OSError("No space left on device")

    wh = str(tmp_path / "wh")
    monkeypatch.setattr(pipeline, "duplicates", broken)
    failed = run_weekly(spark, sources, str(real_dir), wh, db, settings, run_id="dups-broken", quality=False)
    assert not failed.ok and failed.summary["delivered"] == 0
    outcome = {o.source: o for o in failed.state.snapshots}
    assert {o.status for o in outcome.values()} == {"failed"}
    assert "duplicate-key search failed: OSError: No space left on device" in outcome["tx_hhs"].message
    assert not Path(wh, "_scratch", "dups-broken", "2023-07-07").exists()  # its scratch rows deleted
    monkeypatch.undo()
    again = run_weekly(spark, sources, str(real_dir), wh, db, settings, run_id="dups-fixed", quality=False)
    assert again.ok and again.summary["delivered"] == 248


def test_a_rule_change_leaves_every_lead_id_as_it_was(spark, sources, settings, db, tmp_path, real_dir):
    wh = str(tmp_path / "wh")
    assert run_weekly(spark, sources, str(real_dir), wh, db, settings, run_id="before", quality=False).ok
    before = spark.read.format("delta").load(f"{wh}/leads").collect()
    ids_before = {r.lead_id for r in before}
    tx_cities = sum(1 for r in before if r.source == "tx_hhs" and r.city and r.city != r.city.title())
    # change two rules' parameters: Texas cities in title case, and Oklahoma's license split with a
    # separator that never occurs, so its standardized license_number becomes the whole cell: under
    # an id taken from the standardized key, every Oklahoma provider would be a new lead
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    for sid, mutate in {
        "tx_hhs": lambda d: d["fields"][3].update(params={"case": "title"}),
        "ok_dhs": lambda d: d["fields"][0].update(params={"separator": "/"}),
    }.items():
        path = conf / "sources" / f"{sid}.yaml"
        data = yaml.safe_load(path.read_text())
        mutate(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    changed = load_sources(conf)
    assert changed["tx_hhs"].rules_version() != sources["tx_hhs"].rules_version()
    week2 = real_week(real_dir, tmp_path / "w2", "07-14-2023")
    after = run_weekly(spark, changed, week2, wh, db, settings, run_id="after", quality=False)
    assert after.ok, after.summary
    leads = spark.read.format("delta").load(f"{wh}/leads")
    assert {r.lead_id for r in leads.select("lead_id").collect()} == ids_before
    tx, ok = after.summary["sources"]["tx_hhs"], after.summary["sources"]["ok_dhs"]
    assert tx_cities > 90
    assert (tx["new"], tx["removed"], tx["changed"], tx["restandardized"]) == (0, 0, 0, tx_cities)
    assert (ok["new"], ok["removed"], ok["changed"], ok["restandardized"]) == (0, 0, 0, 49)
    assert (after.summary["sources"]["nv_dpbh"]["restandardized"], after.summary["sources"]["nv_dpbh"]["new"]) == (0, 0)
    outcome = {o.source: o for o in after.state.snapshots}
    assert outcome["tx_hhs"].rules_changed_from == sources["tx_hhs"].rules_version()
    assert "rules changed" in outcome["tx_hhs"].message and outcome["nv_dpbh"].rules_changed_from is None
    assert after.summary["delivered"] == 0 and len(pg_lead_ids(db)) == 248
    ok_numbers = {r.license_number for r in leads.filter("source = 'ok_dhs'").select("license_number").collect()}
    assert all(" - " in n for n in ok_numbers)  # the rule did change its output


def test_a_second_run_is_refused_while_one_holds_the_lock(spark, sources, settings, db, tmp_path):
    manifest = generate(tmp_path / "sample", weeks=1, providers=15, seed=3)
    wh = str(tmp_path / "wh")
    holder = RunLock(db, "file:" + wh + "/")  # another spelling of the same warehouse
    holder.acquire("the-weekly-run")
    try:
        with pytest.raises(RunLocked, match=r"another run holds the lock on warehouse"):
            run_weekly(spark, sources, manifest["weeks"][0]["input"], wh, db, settings, run_id="manual")
        # the job's command line: exit status 4 and a JSON summary saying so
        env = job_env()
        url = f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}"
        cmd = [sys.executable, "jobs/weekly_leads.py", "--input", manifest["weeks"][0]["input"], "--warehouse", wh]
        proc = subprocess.run(
            [*cmd, "--db-url", url, "--master", "local[1]"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 4, proc.stderr[-2000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["status"] == "locked" and "another run holds the lock" in summary["errors"][0]
    finally:
        holder.release()
    assert not DeltaTable.isDeltaTable(spark, f"{wh}/leads")  # the refused runs wrote nothing
    done = run_weekly(spark, sources, manifest["weeks"][0]["input"], wh, db, settings, run_id="after-release")
    assert done.ok, done.summary
    assert lock_key("s3a://b/wh/") == lock_key("s3://b/wh")


def test_postgres_down_after_the_merge_fails_cleanly_and_the_next_run_catches_up(spark, sources, tmp_path):
    server = EmbeddedPostgres(Path("/tmp") / f"leadpipe-down-{tmp_path.name}")
    target = server.start()
    conf_settings = load_settings(ROOT / "conf").model_copy(
        update={
            "postgres": load_settings(ROOT / "conf").postgres.model_copy(
                update={"connect_attempts": 3, "retry_backoff_seconds": 0.2}
            )
        }
    )
    try:
        manifest = generate(tmp_path / "sample", weeks=2, providers=30, seed=9)
        w1, w2 = manifest["weeks"]
        wh = str(tmp_path / "wh")
        assert run_weekly(spark, sources, w1["input"], wh, target, conf_settings, run_id="w1", quality=False).ok
        merges = []

        def stop_after_third_merge() -> None:  # the real server goes away once week 2 is committed
            merges.append(1)
            if len(merges) == 3:
                server.stop(mode="immediate")

        faults.on("after_merge", stop_after_third_merge)
        try:
            down = run_weekly(spark, sources, w2["input"], wh, target, conf_settings, run_id="w2", quality=False)
        finally:
            faults.clear()
        assert down.state.status == "failed" and down.state.exit_code == 1
        assert [o.status for o in down.state.snapshots] == ["applied"] * 3  # the MERGEs stay committed
        assert any("unreachable after 3 attempt(s)" in e for e in down.state.errors), down.state.errors
        with pytest.raises(DatabaseUnreachable):
            target.with_retries(1, 0).connect()

        server = EmbeddedPostgres(server.data_dir, port=target.port)
        server.start()
        again = run_weekly(spark, sources, w2["input"], wh, target, conf_settings, run_id="w2-again", quality=False)
        assert again.ok, again.summary
        assert {o.status for o in again.state.snapshots} == {"already_applied"}
        new_in_w2 = sum(len(v["new"]) for v in w2["sources"].values())
        assert again.summary["delivered"] == new_in_w2
        with target.connect() as conn:
            runs = dict(conn.execute("SELECT run_id, status FROM pipeline_runs").fetchall())
        assert runs == {"w1": "succeeded", "w2": "abandoned", "w2-again": "succeeded"}
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def test_run_ids_are_validated_and_bad_usage_exits_2_with_a_summary(tmp_path):
    assert check_run_id("20261126T120000Z-ab12cd34") == "20261126T120000Z-ab12cd34"
    for bad in ("x'; DROP TABLE leads; --", "", "-leading-dash", "a" * 65, "has space"):
        with pytest.raises(ValueError, match="run id"):
            check_run_id(bad)
    env = job_env()
    for args in (
        ["--run-id", "x'; drop"],
        ["--run-id", ""],
        ["--apply-held", "zz_none"],
        ["--bogus-flag"],
        ["--db-url", "mysql://x@y/z"],
        ["--db-url", "postgresql://u:secret@h/db"],
    ):
        proc = subprocess.run(
            [sys.executable, "jobs/weekly_leads.py", "--input", str(tmp_path), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2, (args, proc.stderr[-1000:])
        assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "usage_error"


def test_tls_parameters_reach_the_server(db):
    target = DbTarget.from_url(f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}?sslmode=require")
    assert target.jdbc_url.endswith(f"/{db.dbname}?sslmode=require")
    with pytest.raises(DatabaseUnreachable, match="SSL"):  # the test server has no TLS: libpq got the mode
        target.connect()
    with pytest.raises(ValueError, match="unsupported parameter"):
        DbTarget.from_url("postgresql://u@h/db?options=-c%20search_path%3Devil")
    with pytest.raises(ValueError, match="sslmode"):
        DbTarget.from_url("postgresql://u@h/db?sslmode=sometimes")


def _lock_free(db, key: int) -> bool:
    with db.connect() as conn:
        free = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        if free:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return free


def test_the_lock_goes_with_its_connection(db):
    """A session-level advisory lock is released by the server when its session ends (the kill
    tests show the same for a SIGKILLed run: the next run takes the lock)."""
    first = RunLock(db, "/wh/x")
    first.acquire("a")
    assert not _lock_free(db, first.key)
    first.conn.close()
    deadline = time.monotonic() + 10  # the server ends the session asynchronously
    while not _lock_free(db, first.key) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = RunLock(db, "/wh/x")
    second.acquire("b")
    second.release()


def test_a_lost_lock_is_taken_again_or_the_run_stops(db):
    """PostgreSQL ends the lock's session (a restart, a failover): the run takes the lock again
    and re-reads its state; if another run took it meanwhile, the run stops."""
    lock = RunLock(db, "/wh/y")
    lock.acquire("run-1")
    assert lock.check("run-1") is True
    with db.connect(autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (lock.backend_pid,))
    assert lock.check("run-1") is False  # lost, and taken again on a new session
    assert not _lock_free(db, lock.key)
    with db.connect(autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (lock.backend_pid,))
    other = RunLock(db, "/wh/y")
    other.acquire("run-2")  # another run starts while run-1's session is gone
    try:
        with pytest.raises(LockLost, match="was lost"):
            lock.check("run-1")
    finally:
        other.release()


def test_a_stage_emptied_by_a_server_restart_is_never_published(db):
    """An UNLOGGED staging table is emptied when PostgreSQL crashes: publishing what is left
    would record versions as delivered without their leads. The transaction refuses."""
    ensure_tables(db)
    with db.connect(autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE leads_stage_x (LIKE leads INCLUDING DEFAULTS)")
        conn.execute("INSERT INTO leads_stage_x (lead_id, source) VALUES ('s-1', 's'), ('s-2', 's')")
    with pytest.raises(StagingIncomplete, match=r"holds 2 distinct lead\(s\) of the 3 row"):
        _publish(db, "public", "leads", "leads_stage_x", "table-1", 0, 4, "run-1", staged=3)
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM lead_deliveries").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 0
    with db.connect(autocommit=True) as conn:  # a retried task's rows, there twice: still every lead once
        conn.execute("INSERT INTO leads_stage_x (lead_id, source) VALUES ('s-1', 's')")
    assert _publish(db, "public", "leads", "leads_stage_x", "table-1", 0, 4, "run-1", staged=2) == 2
    with db.connect() as conn:
        assert conn.execute("SELECT version FROM lead_deliveries").fetchall() == [(4,)]
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'leads_stage_x'").fetchone()[0] == 0


def test_a_lead_already_in_postgres_sends_the_delivery_through_a_stage(spark, sources, settings, db, tmp_path, caplog):
    """The direct COPY refuses a lead_id the leads table already has (a warehouse rebuilt beside
    its database): nothing of it commits, and the same delivery goes through a staging table,
    which keeps the leads already there and delivers the others, with one ledger row."""
    manifest = generate(tmp_path / "gen", weeks=2, providers=60, seed=11)
    week1, week2 = (w["input"] for w in manifest["weeks"])
    assert settings.delivery_method == "direct"
    first = run_weekly(spark, sources, week1, str(tmp_path / "wh-a"), db, settings, run_id="a1", quality=False)
    assert first.ok and first.summary["delivered"] > 0
    before = pg_lead_ids(db)
    both = tmp_path / "both"  # a new warehouse (a new Delta table): weeks 1 and 2 again
    both.mkdir()
    for week in (week1, week2):
        for f in Path(week).iterdir():
            shutil.copy(f, both / f.name)
    with caplog.at_level("INFO", logger="leadpipe.deliver"):
        rebuilt = run_weekly(
            spark, sources, str(both), str(tmp_path / "wh-b"), db, settings, run_id="b1", quality=False
        )
    assert rebuilt.ok, rebuilt.summary
    fallback = [m for m in caplog.messages if "is already in public.leads" in m]
    assert len(fallback) == 1 and "delivering through a staging table instead" in fallback[0]
    assert any("staged by copy" in m for m in caplog.messages)
    after = pg_lead_ids(db)
    assert before < after
    assert rebuilt.summary["delivered"] == len(after - before)
    with db.connect() as conn:
        ledger = conn.execute("SELECT run_id, leads_delivered FROM lead_deliveries ORDER BY delivered_at").fetchall()
        stages = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'leads_stage_%'").fetchone()[0]
    assert ledger == [("a1", len(before)), ("b1", len(after - before))]
    assert stages == 0


def _database_statement_timeout(db: DbTarget, value: str) -> None:
    """What a DBA sets for every session of the database (a role's bound acts the same)."""
    with db.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(
                sql.Identifier(db.dbname), sql.Literal(value)
            )
        )


def test_each_session_sets_the_statement_timeout_of_settings_and_the_lock_keeps_its_own(spark, db):
    _database_statement_timeout(db, "150ms")
    with db.connect() as conn:  # a target without one: the server's bound
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "150ms"
    target = db.with_statement_timeout("0")
    for bound, shown in ((target, "0"), (target.with_statement_timeout("30min"), "30min")):
        with bound.connect() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == shown
    via_jdbc = spark.read.jdbc(  # Spark's JDBC writer and reader (pgJDBC) get the same session settings
        target.jdbc_url,
        "(SELECT current_setting('statement_timeout') AS bound) AS s",
        properties=target.jdbc_properties(),
    )
    assert via_jdbc.first()["bound"] == "0"
    lock = RunLock(target, "/wh/timeouts")
    lock.acquire("r")
    try:  # the lock's statements keep their own bound, whatever settings say
        assert lock.conn.execute("SHOW statement_timeout").fetchone()[0] == "30s"
    finally:
        lock.release()
    for bad in ("5 minutes", "25d", "500us"):  # 25 days is more than PostgreSQL takes; us rounds to none
        with pytest.raises(ValueError, match=rf"statement_timeout '{bad}': a PostgreSQL duration"):
            db.with_statement_timeout(bad)


def test_a_database_statement_timeout_cancels_a_slow_delivery_only_when_settings_leave_it(
    spark, sources, db, tmp_path, monkeypatch
):
    """A DBA's statement_timeout (1 s on the database here) outlasted by the delivery's COPY
    (its feed pauses for 3 s mid-COPY), or by a staging table's COPY in a Spark task: with
    ``postgres.statement_timeout: null`` (the server's bound) PostgreSQL cancels it, nothing is
    committed and the run's error says which setting; with the default (0: none) the next run
    delivers every lead."""
    from leadpipe import deliver as deliver_mod

    original = deliver_mod.streamed_lines

    @contextmanager
    def paused(leads):
        with original(leads) as lines:

            def slow():
                for i, line in enumerate(lines):
                    if i == 1:  # the COPY has begun
                        time.sleep(3.0)
                    yield line

            yield slow()

    monkeypatch.setattr(deliver_mod, "streamed_lines", paused)
    manifest = generate(tmp_path / "sample", weeks=1, providers=30, seed=4)
    (week,) = manifest["weeks"]
    _database_statement_timeout(db, "1s")
    settings = load_settings(ROOT / "conf")
    assert settings.postgres.statement_timeout == "0"
    servers = settings.model_copy(update={"postgres": settings.postgres.model_copy(update={"statement_timeout": None})})
    wh = str(tmp_path / "wh")

    cancelled = run_weekly(spark, sources, week["input"], wh, db, servers, run_id="servers", quality=False)
    assert cancelled.state.status == "failed"
    assert [o.status for o in cancelled.state.snapshots] == ["applied"] * 3  # the MERGEs stay
    (error,) = cancelled.state.errors
    assert "DeliveryCancelled" in error and "statement timeout" in error, error
    assert "(canceling statement due to statement timeout)" in error, error
    assert "use the server's statement_timeout: postgres.statement_timeout in settings.yaml" in error, error
    assert pg_lead_ids(db) == set()
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM lead_deliveries").fetchone()[0] == 0

    # through a staging table: the COPY runs in a Spark task, which waits 3 s for its first row
    def slow_first_row(value, _slept=[]):  # noqa: B006 (a list per task: it sleeps once per task)
        if not _slept:
            _slept.append(True)
            time.sleep(3.0)
        return value

    slow, for_stage = F.udf(slow_first_row, "string"), deliver_mod.for_stage
    monkeypatch.setattr(deliver_mod, "for_stage", lambda leads: for_stage(leads).withColumn("lead_id", slow("lead_id")))
    staged = servers.model_copy(update={"delivery_method": "copy"})
    in_task = run_weekly(spark, sources, week["input"], wh, db, staged, run_id="staged", quality=False)
    assert in_task.state.status == "failed"
    (error,) = in_task.state.errors
    assert "DeliveryCancelled" in error and "(canceling statement due to statement timeout)" in error, error
    assert pg_lead_ids(db) == set()
    monkeypatch.setattr(deliver_mod, "for_stage", for_stage)

    again = run_weekly(spark, sources, week["input"], wh, db, settings, run_id="default", quality=False)
    assert again.ok, again.summary
    new = {lead_id_for(sid, [k]) for sid, s in week["sources"].items() for k in s["keys"]}
    assert again.summary["delivered"] == len(new) and pg_lead_ids(db) == new
