"""A real cluster: a Spark standalone master and two workers on 127.0.0.1, started from the pyspark
distribution, run the packaged job (the wheel as a --py-files zip, the entry script from dist/)
with its input, warehouse and configuration on moto's S3 server. It must deliver the same leads,
with the same counts, as a local-mode run on the same files.

Python applications cannot use ``--deploy-mode cluster`` on a standalone master, so the driver
runs in client mode here (on EMR the step uses YARN's cluster mode); the executors are the
workers' own JVMs and Python processes, fetching the zip from the driver.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest
import yaml

from tests.helpers import job_env, s3_client, upload_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
# delivery bookkeeping that differs between two runs by design; every other column must match
RUN_COLUMNS = {"source_file", "delivered_at", "run_id"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    url: str
    ui: str
    work: Path  # the workers' folders (worker-<i>/app-.../<executor>/)
    env: dict[str, str]


def _alive_workers(ui: str) -> int:
    try:
        with urllib.request.urlopen(f"{ui}/json/", timeout=5) as r:
            state = json.load(r)
    except OSError:
        return 0
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, aws_server):
    """A standalone master and WORKERS workers (1 core, 2 GiB each), stopped (process group
    killed) at the end; they inherit the S3 endpoint and credentials of moto's server."""
    base = tmp_path_factory.mktemp("standalone")
    # every JVM of the cluster (master, workers, their executors, the driver) runs one job
    env = job_env(SPARK_HOME=str(Path(pyspark.__file__).parent), SPARK_LOCAL_IP="127.0.0.1")
    env.pop("PYSPARK_GATEWAY_PORT", None)
    spark_class = str(Path(sys.executable).parent / "spark-class")
    port, ui_port = _free_port(), _free_port()
    url, ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    master = "org.apache.spark.deploy.master.Master"
    daemons = [[spark_class, master, "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)]]
    for i in range(WORKERS):
        (base / f"worker-{i}").mkdir()
        resources = ["--cores", "1", "--memory", "2g", "--work-dir", str(base / f"worker-{i}")]
        worker = [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", *resources]
        daemons.append([*worker, "--webui-port", str(_free_port())])
    procs = []
    try:
        for i, cmd in enumerate(daemons):
            log = open(base / f"daemon-{i}.log", "wb")  # noqa: SIM115 (closed with the process)
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
            if i == 0:
                time.sleep(3)  # the master first, so the workers register at once
        deadline = time.monotonic() + 180
        while _alive_workers(ui) < WORKERS:
            dead = [p.args[1] for p in procs if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, f"standalone cluster did not start: {dead}"
            time.sleep(1)
        yield Cluster(url, ui, base, env)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _leads(db) -> dict[str, dict]:
    with db.connect() as conn:
        cur = conn.execute("SELECT * FROM leads")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {r["lead_id"]: {k: v for k, v in r.items() if k not in RUN_COLUMNS} for r in rows}


def _counts(summary: dict) -> dict:
    return {
        "delivered": summary["delivered"],
        "files": sorted((f["name"], f["status"]) for f in summary["files"]),
        "sources": {
            sid: {k: s[k] for k in ("rows_read", "rows_rejected", "new", "changed", "removed", "statuses")}
            for sid, s in summary["sources"].items()
        },
    }


def test_packaged_job_on_a_standalone_cluster_delivers_what_local_mode_delivers(
    cluster, dist, aws_server, pg_server, real_files_run, real_dir, tmp_path
):
    s3 = s3_client(aws_server)
    bucket = f"cluster-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    upload_folder(s3, real_dir, bucket, "active/")
    # the configuration make deploy uploads, with the test session's small-data settings (two
    # single-core executors: 2 shuffle partitions, Delta's log read in one)
    conf = tmp_path / "conf"
    shutil.copytree(dist / "conf", conf)
    settings_yaml = yaml.safe_load((conf / "settings.yaml").read_text())
    settings_yaml["spark"].update(
        {"spark.sql.shuffle.partitions": "2", "spark.databricks.delta.snapshotPartitions": "1"}
    )
    (conf / "settings.yaml").write_text(yaml.safe_dump(settings_yaml))
    upload_folder(s3, conf, bucket, "deploy/conf/")

    dbname = f"t_cluster_{uuid.uuid4().hex[:8]}"
    with pg_server.target().connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    on_cluster = pg_server.target(dbname)

    work = tmp_path / "elsewhere"  # not the checkout: no conf/, no jobs/, no lib/ beside the job
    work.mkdir()
    cmd = [
        "spark-submit",
        "--master",
        cluster.url,
        "--py-files",
        str(dist / "wheels" / "leadpipe.zip"),
        "--conf",
        "spark.executor.memory=1g",
        "--conf",
        f"spark.cores.max={WORKERS}",
        str(dist / "jobs" / "weekly_leads.py"),
        "--input",
        f"s3://{bucket}/active/",
        "--warehouse",
        f"s3://{bucket}/warehouse/",
        "--conf-dir",
        f"s3://{bucket}/deploy/conf/",
        "--reports",
        str(tmp_path / "reports"),
        "--no-quality",
        "--db-url",
        f"postgresql://{on_cluster.user}@{on_cluster.host}:{on_cluster.port}/{on_cluster.dbname}",
    ]
    env = {k: v for k, v in cluster.env.items() if k != "LEADPIPE_CONF_DIR"}
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded", summary["errors"]
    # the driver ran the zip's code with the configuration from S3, on the standalone master
    # (spark-submit's Python runner passes the job's log through its standard output)
    log = proc.stdout + proc.stderr
    assert f"from s3://{bucket}/deploy/conf/; leadpipe from {dist / 'wheels' / 'leadpipe.zip'}/leadpipe" in log
    assert f"spark: master {cluster.url}" in log
    # and the executors were the workers': each fetched the zip into its application folder
    fetched = sorted(cluster.work.glob("worker-*/app-*/*/leadpipe.zip"))
    assert {p.parts[-4] for p in fetched} == {f"worker-{i}" for i in range(WORKERS)}, fetched

    # the local-mode run of the same files (run_weekly in this session's local[2] Spark)
    expected = real_files_run.result
    assert expected.ok, expected.summary["errors"]
    assert expected.summary["delivered"] == 248
    assert _counts(summary) == _counts(expected.summary)
    cluster_leads, local_leads = _leads(on_cluster), _leads(real_files_run.db)
    assert len(cluster_leads) == 248
    assert cluster_leads == local_leads
