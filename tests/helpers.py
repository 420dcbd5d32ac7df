"""Small builders for tests: canonical lead rows, real weeks under other dates, PostgreSQL reads."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from leadpipe.canonical import BUSINESS_COLUMNS, CANONICAL_ROW_COLUMNS, LEAD_COLUMNS, raw_hash, record_hash

#: Spark settings for the suite's few-row runs (the test session and the killed runs):
#: expressions are interpreted instead of compiled, with no whole-stage codegen, and queries are
#: planned once, without adaptive execution. A test's rows are a few dozen: generating and
#: compiling Java for each plan costs more than running it (8 small weekly runs in one session:
#: 56-57 s against 67 s compiled, the first, cold run 15.0-16.7 s against 18.4-19.7 s), and so
#: does re-planning a query after each of its shuffles (8 warm small runs: 36.4/37.8 s without
#: adaptive execution against 41.9/41.8 s with it). Spark means all of them to give the same
#: values, and the suite checks it: the backfill test's last two reference weekly runs are
#: planned as the job plans (COMPILED_CONF) and their leads are compared one by one with the
#: backfill's, and test_s3 and test_cluster run the shipped job, with its own settings, on the
#: real files.
SMALL_DATA_CONF = {
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.adaptive.enabled": "false",
}

#: The job's own planning (Spark's defaults and conf/settings.yaml): expressions compiled to
#: Java, whole-stage codegen, adaptive execution; for a block of a session that otherwise runs
#: with SMALL_DATA_CONF.
COMPILED_CONF = {
    "spark.sql.codegen.factoryMode": "FALLBACK",
    "spark.sql.codegen.wholeStage": "true",
    "spark.sql.adaptive.enabled": "true",
}


def job_env(**extra: str) -> dict[str, str]:
    """The environment for the job started as its own process (one run, then exit), and for the
    JVMs of test_cluster's standalone cluster (one job): this venv's
    python for Spark's workers and first on PATH (its spark-submit), and the JVM's JIT at its
    first tier only (``-XX:TieredStopAtLevel=1``). A process that makes one small run ends before
    the optimizing compiler's code would pay for its compile time: a cold one-source weekly run
    took 22.8-27.3 s against 29.7-32.8 s (week 1) and 28.0-32.0 s against 31.7-35.7 s (week 2).
    The JIT changes no result. ``extra`` is added last."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["JDK_JAVA_OPTIONS"] = f"{env.get('JDK_JAVA_OPTIONS', '')} -XX:TieredStopAtLevel=1".strip()
    return {**env, **extra}


def pg_lead_ids(db) -> set[str]:
    """The lead_ids in PostgreSQL's leads table (its primary key: each at most once)."""
    with db.connect() as conn:
        return {r[0] for r in conn.execute("SELECT lead_id FROM leads").fetchall()}


def leads(spark: SparkSession, rows: list[dict], snapshot: date) -> DataFrame:
    """Canonical rows (as map_to_canonical makes them) from dicts of a few business fields.

    The agency's raw values are ``Name`` = company and ``Capacity`` = capacity, (when given),
    unless a row gives its own ``raw`` dict; ``rules_version`` defaults to ``rules-1``.
    """
    full = []
    for i, r in enumerate(rows, start=1):
        row = dict.fromkeys(LEAD_COLUMNS)
        row.update(
            source=r.get("source", "s1"),
            licensing_authority="Test Authority",
            source_file=r.get("source_file", "file:/in/test.csv"),
            snapshot_date=snapshot,
            first_seen=snapshot,
        )
        row.update({k: v for k, v in r.items() if k in LEAD_COLUMNS})
        default_raw = {"Name": r.get("company")} | ({"Capacity": str(r["capacity"])} if "capacity" in r else {})
        row["raw"] = r.get("raw", default_raw)
        row["rules_version"] = r.get("rules_version", "rules-1")
        row["record_no"] = r.get("record_no", i)
        row["_corrupt_record"] = r.get("_corrupt_record")
        full.append(row)
    from leadpipe.merge import LEADS_TABLE_SCHEMA

    schema_fields = {f.name: f.dataType for f in LEADS_TABLE_SCHEMA.fields}
    ddl = ", ".join(f"`{c}` {schema_fields[c].simpleString()}" for c in LEAD_COLUMNS)
    df = spark.createDataFrame(
        full, f"{ddl}, raw map<string,string>, rules_version string, record_no long, _corrupt_record string"
    )
    df = df.withColumn("record_hash", record_hash(list(BUSINESS_COLUMNS)))
    df = df.withColumn("raw_hash", raw_hash(F.col("raw")))
    df = df.withColumn("dq_issues", F.array().cast("array<struct<column:string,rule:string,raw_value:string>>"))
    df = df.withColumn("dq_present", F.array().cast("array<boolean>"))
    return df.select(*CANONICAL_ROW_COLUMNS)


def s3_client(aws_env: dict[str, str]):
    import boto3

    return boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1")


def upload_folder(client, folder: Path, bucket: str, prefix: str) -> None:
    """Every file below ``folder`` to ``s3://bucket/prefix<relative path>``."""
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(f), bucket, prefix + f.relative_to(folder).as_posix())


TX = "Texas DHHS.csv"


def real_week(real_dir: Path, folder: Path, stamp: str, texas_records: int | None = None) -> str:
    """The three real files under another snapshot date; Texas cut to ``texas_records`` rows."""
    folder.mkdir(parents=True)
    for f in real_dir.iterdir():
        target = folder / f.name.replace("07-07-2023", stamp)
        if texas_records is not None and f.name.endswith(TX):
            lines = f.read_bytes().split(b"\r\n")
            target.write_bytes(b"\r\n".join(lines[: texas_records + 1]) + b"\r\n")
        else:
            shutil.copy(f, target)
    return str(folder)
