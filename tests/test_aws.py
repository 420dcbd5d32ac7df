"""Alerts to SNS and the database password from Secrets Manager, against moto's server.

The run's message is read back from an SQS queue subscribed to the topic, as an operator's
e-mail or chat integration would receive it.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

import boto3
import pytest
import yaml

from leadpipe.aws import SecretError, database_password, publish_run
from leadpipe.cli import weekly_leads_main
from tests.helpers import pg_lead_ids

ROOT = Path(__file__).resolve().parent.parent
NV = "07-07-2023 Nevada Dept of Public _ Behavioral Health.csv"


@pytest.fixture
def topic_queue(aws_server):
    """A topic and a queue subscribed to it (each message arrives in SNS's JSON envelope)."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=f"leads-{uuid.uuid4().hex[:8]}")["TopicArn"]
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return topic, url


def received(url: str) -> list[dict]:
    msgs = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [json.loads(m["Body"]) for m in msgs.get("Messages", [])]


def test_password_from_secrets_manager(aws_server, monkeypatch):
    sm = boto3.client("secretsmanager")
    name = f"leads-db-{uuid.uuid4().hex[:8]}"
    arn = sm.create_secret(Name=name, SecretString=json.dumps({"username": "leads", "password": "s3cr3t-pw"}))["ARN"]
    plain = sm.create_secret(Name=name + "-plain", SecretString="plain-pw")["ARN"]
    monkeypatch.delenv("PGPASSWORD", raising=False)
    assert database_password(arn) == "s3cr3t-pw"  # the RDS shape, by ARN
    assert database_password(name + "-plain") == "plain-pw"  # by name
    assert database_password(plain) == "plain-pw"
    assert database_password(None) is None
    with pytest.raises(SecretError, match="could not read the database password from Secrets Manager secret 'nope'"):
        database_password("nope")
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert database_password(arn) == "from-env"  # PGPASSWORD wins


def test_publish_failure_is_logged_never_raised(aws_server):
    assert publish_run("arn:aws:sns:us-east-1:123456789012:no-such-topic", {"run_id": "r", "status": "failed"}) is False


@pytest.fixture
def root_logging():
    """The command line configures logging for its process; put the test process's back."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.integration
def test_each_run_publishes_its_alert_or_summary(
    aws_server, topic_queue, db, tmp_path, real_dir, monkeypatch, root_logging
):
    """The job's command line with a topic and a password secret in settings: a successful run
    publishes its summary, a failed one an alert; the password never appears in either."""
    topic, queue = topic_queue
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"pw-{uuid.uuid4().hex[:8]}", SecretString=json.dumps({"password": "never-shown-pw"})
    )["ARN"]
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    settings = yaml.safe_load((conf / "settings.yaml").read_text())
    settings["alerts"] = {"sns_topic_arn": topic}
    settings["postgres"]["password_secret"] = secret
    settings["expected_sources"] = []
    (conf / "settings.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(real_dir / NV, inp)
    url = f"postgresql://{db.user}@{db.host}:{db.port}/{db.dbname}"
    common = ["--warehouse", str(tmp_path / "wh"), "--db-url", url, "--conf-dir", str(conf), "--no-quality"]

    assert weekly_leads_main(["--input", str(inp), *common, "--run-id", "ok-run"]) == 0
    assert len(pg_lead_ids(db)) == 100
    (ok,) = received(queue)
    assert ok["Subject"] == "leadpipe run: succeeded (ok-run)"
    assert "new leads delivered: 100" in ok["Message"] and "nv_dpbh: 2023-07-07 applied" in ok["Message"]

    assert weekly_leads_main(["--input", str(tmp_path / "missing"), *common, "--run-id", "bad-run"]) == 1
    (alert,) = received(queue)
    assert alert["Subject"] == "leadpipe ALERT: failed (bad-run)"
    assert "input location does not exist" in alert["Message"]
    assert "never-shown-pw" not in ok["Message"] + alert["Message"]
