"""The weekly EMR step generated from config (``leads-emr``), added to a cluster of moto's EMR on
127.0.0.1, and the configuration read from S3 (``--conf-dir s3://...``)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from leadpipe.cli import weekly_parser
from leadpipe.config import ConfigError, load_settings, load_sources, resolve_conf_dir
from leadpipe.emr import NODE_HOME, main, weekly_step
from tests.helpers import s3_client, upload_folder

ROOT = Path(__file__).resolve().parent.parent
DB_URL = "postgresql://leadpipe@leads-db.internal:5432/leads"


def _conf(tmp_path: Path, **emr) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("cloudformation"))
    data = yaml.safe_load((conf / "settings.yaml").read_text())
    data["emr"].update(emr)
    (conf / "settings.yaml").write_text(yaml.safe_dump(data))
    return conf


PRODUCTION = {
    "deploy_uri": "s3://acme-deploy/leadpipe",
    "input": "s3://acme-drop/active/",
    "warehouse": "s3://acme-lake/warehouse/",
    "archive": "s3://acme-drop/historical/",
}


def test_step_from_settings_runs_the_deployed_job_as_its_parser_expects(tmp_path):
    settings = load_settings(_conf(tmp_path, **PRODUCTION))
    step = weekly_step(settings, db_url=DB_URL)
    assert step["Name"] == "weekly-leads" and step["ActionOnFailure"] == "CONTINUE"
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    args = step["HadoopJarStep"]["Args"]
    assert args[:5] == ["spark-submit", "--deploy-mode", "cluster", "--master", "yarn"]
    assert args[args.index("--jars") + 1] == "s3://acme-deploy/leadpipe/jars/*.jar"  # what make deploy uploads
    confs = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--conf")
    assert confs["spark.driver.memory"] == settings.spark_submit["spark.driver.memory"]  # launch-time, so here
    assert confs["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert confs["spark.pyspark.python"] == "/opt/leadpipe/venv/bin/python"  # the bootstrap action's venv
    assert args[args.index("--py-files") + 1] == "s3://acme-deploy/leadpipe/wheels/leadpipe.zip"  # deployed code
    script = "s3://acme-deploy/leadpipe/jobs/weekly_leads.py"
    parsed = weekly_parser().parse_args(args[args.index(script) + 1 :])
    assert (parsed.input, parsed.warehouse, parsed.archive) == (
        "s3://acme-drop/active/",
        "s3://acme-lake/warehouse/",
        "s3://acme-drop/historical/",
    )
    assert parsed.db_url == DB_URL and parsed.conf_dir == "/opt/leadpipe/conf"


def test_the_step_and_the_bootstrap_action_agree_on_the_node_folder():
    script = (ROOT / "bootstrap" / "install_leadpipe.sh").read_text()
    assert f'home="${{LEADPIPE_HOME:-{NODE_HOME}}}"' in script


@pytest.mark.parametrize(
    "deploy_uri", ["s3://acme-deploy/leadpipe", "s3://acme-deploy/leadpipe/", "s3://acme-deploy/leadpipe//"]
)
def test_the_deploy_uri_is_one_folder_however_it_is_written(tmp_path, deploy_uri):
    settings = load_settings(_conf(tmp_path, **{**PRODUCTION, "deploy_uri": deploy_uri}))
    args = weekly_step(settings, db_url=DB_URL)["HadoopJarStep"]["Args"]
    assert "s3://acme-deploy/leadpipe/jobs/weekly_leads.py" in args


@pytest.mark.parametrize(
    ("emr", "key"),
    [
        ({k: v for k, v in PRODUCTION.items() if k != "deploy_uri"}, "emr.deploy_uri"),
        ({k: v for k, v in PRODUCTION.items() if k != "input"}, "emr.input"),
        ({k: v for k, v in PRODUCTION.items() if k != "warehouse"}, "emr.warehouse"),  # settings' is a folder
    ],
)
def test_a_step_without_what_it_needs_is_refused_naming_file_and_key(tmp_path, emr, key, capsys):
    conf = _conf(tmp_path, **emr)
    with pytest.raises(ConfigError, match=f"settings.yaml: {key}: not set"):
        weekly_step(load_settings(conf), db_url=DB_URL)
    assert main(["--conf-dir", str(conf), "--db-url", DB_URL]) == 2
    assert f"{conf}/settings.yaml: {key}: not set" in capsys.readouterr().err


def test_a_step_without_a_database_url_or_with_a_password_in_it_is_refused(tmp_path):
    settings = load_settings(_conf(tmp_path, **PRODUCTION))
    with pytest.raises(ConfigError, match=r"postgres\.url: not set"):
        weekly_step(settings)
    # a step's arguments show in the console, the API and CloudTrail
    with pytest.raises(ConfigError, match="must not contain a password"):
        weekly_step(settings, db_url="postgresql://leadpipe:s3cret@leads-db.internal:5432/leads")


def test_a_password_in_settings_url_is_refused_at_load(tmp_path):
    conf = _conf(tmp_path, **PRODUCTION)
    data = yaml.safe_load((conf / "settings.yaml").read_text())
    data["postgres"]["url"] = "postgresql://leadpipe:s3cret@db.internal/leads"
    (conf / "settings.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"settings\.yaml: postgres\.url: must not contain a password"):
        load_settings(conf)


def test_emr_settings_are_validated_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"settings\.yaml: emr\.input: String should match pattern"):
        load_settings(_conf(tmp_path / "a", **{**PRODUCTION, "input": "/data/active"}))
    with pytest.raises(ConfigError, match=r"emr\.action_on_failure"):
        load_settings(_conf(tmp_path / "b", **{**PRODUCTION, "action_on_failure": "RETRY"}))
    with pytest.raises(ConfigError, match=r"emr\.deploy_uri"):  # the AWS CLI of the bootstrap reads s3:// only
        load_settings(_conf(tmp_path / "c", **{**PRODUCTION, "deploy_uri": "s3a://acme-deploy/"}))


def test_a_local_archive_is_refused_for_the_step(tmp_path):
    conf = _conf(tmp_path, **{k: v for k, v in PRODUCTION.items() if k != "archive"})
    data = yaml.safe_load((conf / "settings.yaml").read_text())
    data["archive"] = ".local/historical"
    (conf / "settings.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"settings\.yaml: archive: '\.local/historical' is not an s3:// URI"):
        weekly_step(load_settings(conf), db_url=DB_URL)


@pytest.mark.integration
def test_leads_emr_adds_the_step_to_a_running_cluster(tmp_path, aws_server, capsys):
    import boto3

    emr = boto3.client("emr")
    cluster = emr.run_job_flow(
        Name=f"leadpipe-{uuid.uuid4().hex[:6]}",
        ReleaseLabel="emr-spark-8.1.0",
        Applications=[{"Name": "Spark"}],
        Instances={"MasterInstanceType": "m6i.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        StepConcurrencyLevel=1,
    )["JobFlowId"]
    conf = _conf(tmp_path, **PRODUCTION)
    assert main(["--conf-dir", str(conf), "--db-url", DB_URL, "--cluster-id", cluster]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cluster_id"] == cluster
    (listed,) = emr.list_steps(ClusterId=cluster)["Steps"]
    assert listed["Id"] == out["step_id"]
    described = emr.describe_step(ClusterId=cluster, StepId=out["step_id"])["Step"]
    expected = weekly_step(load_settings(conf), db_url=DB_URL)
    assert described["Name"] == expected["Name"]
    assert described["ActionOnFailure"] == expected["ActionOnFailure"]
    assert described["Config"]["Jar"] == "command-runner.jar"
    assert described["Config"]["Args"] == expected["HadoopJarStep"]["Args"]


@pytest.mark.integration
def test_configuration_from_s3_loads_and_names_s3_in_its_errors(tmp_path, aws_server):
    s3 = s3_client(aws_server)
    bucket = f"conf-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    conf = _conf(tmp_path, **PRODUCTION)
    upload_folder(s3, conf, bucket, "leadpipe/conf/")
    s3.put_object(Bucket=bucket, Key="leadpipe/conf/README.txt", Body=b"not configuration")
    for uri in (f"s3://{bucket}/leadpipe/conf/", f"s3a://{bucket}/leadpipe/conf"):
        remote = resolve_conf_dir(uri)
        assert str(remote) == uri
        assert sorted(load_sources(remote)) == sorted(load_sources(conf))
        assert load_settings(remote).emr == load_settings(conf).emr
        assert load_settings(remote).path == f"{uri.rstrip('/')}/settings.yaml"

    broken = yaml.safe_load((conf / "sources" / "tx_hhs.yaml").read_text())
    broken["fields"][0]["rule"] = "phon"
    s3.put_object(Bucket=bucket, Key="leadpipe/conf/sources/tx_hhs.yaml", Body=yaml.safe_dump(broken).encode())
    with pytest.raises(ConfigError) as err:
        load_sources(resolve_conf_dir(f"s3://{bucket}/leadpipe/conf/"))
    assert str(err.value).startswith(f"s3://{bucket}/leadpipe/conf/sources/tx_hhs.yaml: fields[0]: unknown rule 'phon'")

    with pytest.raises(ConfigError, match=r"no sources/\*\.yaml below it"):
        resolve_conf_dir(f"s3://{bucket}/nothing-here/")
    with pytest.raises(ConfigError, match="could not read the configuration: NoSuchBucket"):
        resolve_conf_dir(f"s3://no-such-{bucket}/conf/")


def test_a_local_conf_dir_without_sources_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a configuration folder"):
        resolve_conf_dir(tmp_path)


def test_the_packaged_configuration_is_the_default(monkeypatch):
    monkeypatch.delenv("LEADPIPE_CONF_DIR", raising=False)
    conf = resolve_conf_dir()
    assert conf.path == (ROOT / "conf").resolve()  # in a checkout, lib/leadpipe/conf is conf/
    monkeypatch.setenv("LEADPIPE_CONF_DIR", str(ROOT / "conf"))
    assert resolve_conf_dir().origin == str(ROOT / "conf")
