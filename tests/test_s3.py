"""S3 in, S3 out, against a real S3 server: moto's, on 127.0.0.1, started by the test.

The job finds the endpoint the way the AWS tools do (``AWS_ENDPOINT_URL``), so the command is
the one an engineer runs against AWS: ``spark-submit jobs/weekly_leads.py --input
s3://<bucket>/active/ --warehouse s3://<bucket>/warehouse/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from leadpipe.pipeline import run_weekly
from leadpipe.session import configure_s3, s3_conf
from tests.helpers import job_env, pg_lead_ids

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s3_env(aws_server):
    return aws_server


def test_s3_conf_follows_the_aws_conventions():
    assert s3_conf({})["fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert "fs.s3a.endpoint" not in s3_conf({"AWS_REGION": "eu-west-1"})
    local = s3_conf({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9001"})
    assert local["fs.s3a.endpoint"] == "http://127.0.0.1:9001"  # the S3-specific variable wins
    assert local["fs.s3a.path.style.access"] == "true" and local["fs.s3a.endpoint.region"] == "us-east-1"


def test_the_three_real_files_from_s3(spark, sources, settings, db, s3_env, real_dir, tmp_path):
    """The README's command with s3:// input and warehouse delivers the same 248 leads as from a
    folder, archives the files and publishes its summary to SNS; a second run on s3a:// URIs (the
    same warehouse, the same lock) over the archived copies recognises every snapshot as applied
    and delivers nothing."""
    bucket = f"leads-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    for f in sorted(real_dir.iterdir()):
        s3.upload_file(str(f), bucket, f"active/{f.name}")
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=f"{bucket}-runs")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"{bucket}-runs")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    settings_yaml = yaml.safe_load((conf / "settings.yaml").read_text())
    settings_yaml["alerts"] = {"sns_topic_arn": topic}
    (conf / "settings.yaml").write_text(yaml.safe_dump(settings_yaml))

    env = job_env(LEADPIPE_CONF_DIR=str(conf))
    cmd = [
        "spark-submit",
        "jobs/weekly_leads.py",
        "--input",
        f"s3://{bucket}/active/",
        "--warehouse",
        f"s3://{bucket}/warehouse/",
        "--db-url",
        f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}",
        "--archive",
        f"s3://{bucket}/historical/",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded", summary["errors"]
    assert summary["delivered"] == 248
    assert len(pg_lead_ids(db)) == 248
    assert {f["name"]: f["status"] for f in summary["files"]} == {f.name: "applied" for f in real_dir.iterdir()}
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="warehouse/leads/_delta_log/")["Contents"]}
    assert any(k.endswith(".json") for k in listed)  # the leads table is a Delta table on S3
    # delivered, then archived: the active prefix is empty, the same bytes are under historical/
    assert summary["archived"] == 3
    left = s3.list_objects_v2(Bucket=bucket, Prefix="active/").get("Contents", [])
    assert [o["Key"] for o in left if not o["Key"].endswith("/")] == []  # S3A may leave a folder marker
    for f in real_dir.iterdir():
        body = s3.get_object(Bucket=bucket, Key=f"historical/2023-07-07/{f.name}")["Body"].read()
        assert body == f.read_bytes()

    # this test's JVM started before the variables were set (a JVM's environment is fixed at its
    # start): hand it the endpoint, and the credentials through S3A's own keys
    (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    body = json.loads(message["Body"])
    assert body["Subject"].startswith("leadpipe run: succeeded")
    assert "new leads delivered: 248" in body["Message"]

    configure_s3(spark)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop.set("fs.s3a.access.key", s3_env["AWS_ACCESS_KEY_ID"])
    hadoop.set("fs.s3a.secret.key", s3_env["AWS_SECRET_ACCESS_KEY"])
    again = run_weekly(
        spark, sources, f"s3a://{bucket}/historical/2023-07-07/", f"s3a://{bucket}/warehouse/", db, settings
    )
    assert again.ok, again.summary["errors"]
    assert again.summary["delivered"] == 0
    assert {o.status for o in again.state.snapshots} == {"already_applied"}
    assert len(pg_lead_ids(db)) == 248
