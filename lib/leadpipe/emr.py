"""The weekly EMR step, generated from config.

Guarantees:

- :func:`weekly_step` builds the one step the Step Functions state machine runs
  (``conf/cloudformation/leadpipe.yaml`` holds the same arguments; a test keeps them equal):
  ``command-runner.jar`` -> ``spark-submit --deploy-mode cluster`` with the jars that
  ``make deploy`` uploaded (``<deploy_uri>jars/*.jar``: Delta and the PostgreSQL driver; EMR
  brings Spark, Hadoop and S3; deploy removes jars of earlier deploys), the deployed package as
  ``--py-files`` (so a step added to a long-running cluster runs the code deployed with its entry
  script, not the wheel its bootstrap installed; its configuration and Python requirements stay
  those of the bootstrap: redeployed settings, sources or requirements reach a cluster only when
  it starts, which is every week for the transient cluster of the Step Functions template), the
  Delta settings, settings' ``spark_submit``
  (driver memory, read only at launch) as ``--conf``, the Python of the venv the bootstrap action
  made on every node (:data:`NODE_HOME`), and the job's arguments: input, warehouse, archive, the
  database URL (refused if it holds a password) and the conf folder the bootstrap action wrote.
- Everything it needs comes from settings ``emr`` (and ``postgres.url``); a missing or local
  piece is a :class:`~leadpipe.config.ConfigError` naming the settings file and key, before any
  AWS call.
- :func:`add_step` adds it to a running cluster with boto3 (the standard credential chain and
  ``AWS_ENDPOINT_URL``), returning the step id.

Command line: ``leads-emr [--cluster-id j-...]``. The node side is ``bootstrap/install_leadpipe.sh``
(bootstrap actions run before EMR installs Spark, so it cannot import the job's modules).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from leadpipe.aws import s3_location
from leadpipe.config import ConfigError, Settings, load_settings, resolve_conf_dir
from leadpipe.session import DELTA_CONF


def _required(settings: Settings, value: str | None, key: str) -> str:
    if not value:
        raise ConfigError(f"{settings.path}: {key}: not set; the EMR step needs it")
    return value


def _s3(settings: Settings, value: str | None, key: str) -> str | None:
    if value and not value.startswith(("s3://", "s3a://")):
        raise ConfigError(
            f"{settings.path}: {key}: {value!r} is not an s3:// URI; an EMR step cannot read a local path"
        )
    return value


#: Where bootstrap/install_leadpipe.sh installs leadpipe on every node (its LEADPIPE_HOME default):
#: venv/ and conf/, readable by the YARN containers' user.
NODE_HOME = "/opt/leadpipe"


def s3_folder(uri: str) -> str:
    """``uri`` as the folder deploy writes (:func:`~leadpipe.aws.s3_location`): the step and
    deploy agree on the keys below it however many slashes it ends in."""
    bucket, prefix = s3_location(uri)
    return f"s3://{bucket}/{prefix}"


def step_arguments(settings: Settings, db_url: str | None = None) -> list[str]:
    """The ``command-runner.jar`` arguments of the weekly step (see the module's guarantees)."""
    emr = settings.emr
    deploy = s3_folder(_required(settings, emr.deploy_uri, "emr.deploy_uri"))
    input_uri = _required(settings, emr.input, "emr.input")
    warehouse = emr.warehouse or _s3(settings, settings.warehouse if "://" in settings.warehouse else None, "warehouse")
    warehouse = _required(settings, warehouse, "emr.warehouse")
    archive = emr.archive or _s3(settings, settings.archive, "archive")
    db_url = _required(settings, db_url or settings.postgres.url, "postgres.url")
    _check_db_url(db_url)
    python = f"{NODE_HOME}/venv/bin/python"
    # Delta's extension and catalog (the job sets them too; here they are in force before any code runs)
    conf = {**DELTA_CONF, **settings.spark_submit, "spark.pyspark.python": python}  # driver and executors
    args = ["spark-submit", "--deploy-mode", "cluster", "--master", "yarn", "--jars", f"{deploy}jars/*.jar"]
    args += ["--py-files", f"{deploy}wheels/leadpipe.zip"]
    for k, v in conf.items():
        args += ["--conf", f"{k}={v}"]
    args += [f"{deploy}jobs/weekly_leads.py", "--input", input_uri, "--warehouse", warehouse]
    if archive:
        args += ["--archive", archive]
    args += ["--db-url", db_url, "--conf-dir", f"{NODE_HOME}/conf"]
    return args


def _check_db_url(db_url: str) -> None:
    """A step's arguments show in the console, the API and CloudTrail: never a password there."""
    from leadpipe.postgres import DbTarget

    try:
        DbTarget.from_url(db_url, password="")
    except ValueError as exc:
        raise ConfigError(f"postgres.url / {exc}") from None  # exc names --db-url


def weekly_step(settings: Settings, db_url: str | None = None) -> dict[str, Any]:
    """The step as ``AddJobFlowSteps`` (and the state machine's ``addStep.sync``) take it."""
    return {
        "Name": settings.emr.step_name,
        "ActionOnFailure": settings.emr.action_on_failure,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": step_arguments(settings, db_url)},
    }


def add_step(cluster_id: str, step: dict[str, Any], region: str | None = None) -> str:
    """Add ``step`` to the running cluster ``cluster_id``; the new step's id."""
    import boto3

    response = boto3.client("emr", region_name=region).add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])
    return response["StepIds"][0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="leads-emr",
        description="Print the weekly EMR step (JSON, as AddJobFlowSteps takes it) generated from settings 'emr' and "
        "'postgres.url'; with --cluster-id, add it to that running cluster with boto3 and print the step id.",
    )
    p.add_argument("--conf-dir", help="configuration folder or S3 URI (default: $LEADPIPE_CONF_DIR, else packaged)")
    p.add_argument(
        "--db-url",
        default=os.environ.get("LEADPIPE_DB_URL"),
        help="postgresql://user@host:port/db (default: $LEADPIPE_DB_URL, else settings postgres.url); no password",
    )
    p.add_argument("--cluster-id", help="add the step to this running EMR cluster (j-...)")
    p.add_argument("--region", help="the cluster's region (default: the AWS configuration's)")
    args = p.parse_args(argv)
    try:
        settings = load_settings(resolve_conf_dir(args.conf_dir))
        emr_step = weekly_step(settings, args.db_url)
    except ConfigError as exc:
        print(f"leads-emr: {exc}", file=sys.stderr)
        return 2
    if args.cluster_id:
        step_id = add_step(args.cluster_id, emr_step, args.region)
        print(json.dumps({"cluster_id": args.cluster_id, "step_id": step_id, "step": emr_step}, indent=2))
    else:
        print(json.dumps(emr_step, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
