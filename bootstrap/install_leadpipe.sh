#!/usr/bin/env bash
# EMR bootstrap action: install leadpipe on this node (EMR runs it on every node before Spark starts).
#
#   install_leadpipe.sh DEPLOY_URI [PASSWORD_SECRET_ARN] [SNS_TOPIC_ARN]
#
# DEPLOY_URI is where `make deploy` uploaded dist/ (s3://<deploy bucket>/). This script:
#   1. copies DEPLOY_URI wheels/ and conf/ to $LEADPIPE_HOME (default /opt/leadpipe, readable by
#      the YARN containers' user; leadpipe.emr.NODE_HOME names the same folder);
#   2. makes the venv $LEADPIPE_HOME/venv with Python 3.11 (installed with dnf when missing) and
#      installs the pinned runtime requirements (every other package at the version the build
#      venv had: constraints.txt), delta-spark's Python API without its pyspark (EMR brings Spark)
#      and the leadpipe wheel;
#   3. fills the stack's password secret and SNS topic into $LEADPIPE_HOME/conf/settings.yaml;
#   4. checks that the venv imports leadpipe and the libraries its rules use.
# Bootstrap actions run before EMR installs Spark: nothing here imports pyspark. The job checks
# the configuration (errors naming file and key) when the step starts.
# The weekly step (`leads-emr`) runs spark-submit with spark.pyspark.python set to that venv
# and --conf-dir /opt/leadpipe/conf (leadpipe.emr.NODE_HOME: keep LEADPIPE_HOME unset on EMR). Any failure fails the bootstrap action, and so the cluster.
# Set LEADPIPE_PYTHON to use another interpreter, LEADPIPE_AWS to use another aws command line.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 || $1 != s3://* ]]; then
  echo "usage: $0 s3://DEPLOY_BUCKET/[PREFIX/] [PASSWORD_SECRET_ARN] [SNS_TOPIC_ARN]" >&2
  exit 2
fi
deploy="${1%/}/"
secret="${2:-}"
topic="${3:-}"
home="${LEADPIPE_HOME:-/opt/leadpipe}"
python="${LEADPIPE_PYTHON:-python3.11}"
aws="${LEADPIPE_AWS:-aws}"

log() { echo "install_leadpipe: $*" >&2; }

if ! command -v "$python" >/dev/null; then
  log "installing $python with dnf"
  sudo dnf install -y -q "$python"
fi

if ! mkdir -p "$home" 2>/dev/null; then
  sudo mkdir -p "$home"
  sudo chown "$(id -un)" "$home"
fi
chmod 755 "$home"
mkdir -p "$home/wheels" "$home/conf"
log "copying ${deploy}wheels/ and ${deploy}conf/ to $home"
$aws s3 cp --only-show-errors --recursive "${deploy}wheels/" "$home/wheels/"
$aws s3 cp --only-show-errors --recursive "${deploy}conf/" "$home/conf/"
# make deploy leaves exactly one wheel under wheels/ (it deletes what the new dist/ lacks)
wheel=$(find "$home/wheels" -maxdepth 1 -name 'leadpipe-*.whl' | sort -V | tail -n 1)
if [[ -z $wheel || ! -f $home/conf/settings.yaml ]]; then
  log "no leadpipe-*.whl under ${deploy}wheels/ or no ${deploy}conf/settings.yaml: run make deploy"
  exit 1
fi

log "making $home/venv with $("$python" --version 2>&1)"
"$python" -m venv "$home/venv"
pip=("$home/venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install -r "$home/wheels/requirements.txt" -c "$home/wheels/constraints.txt"
"${pip[@]}" install --no-deps -r "$home/wheels/requirements-no-deps.txt"
"${pip[@]}" install --no-deps --force-reinstall "$wheel"

"$home/venv/bin/python" - "$home/conf/settings.yaml" "$secret" "$topic" <<'PY'
import importlib
import importlib.util
import sys
from pathlib import Path

import yaml

path, secret, topic = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
data = (yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None) or {}
if secret:
    data.setdefault("postgres", {})["password_secret"] = secret
if topic:
    data.setdefault("alerts", {})["sns_topic_arn"] = topic
header = "# written by the EMR bootstrap action (install_leadpipe.sh) from the deployed settings.yaml\n"
path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
missing = [n for n in ("delta", "leadpipe") if importlib.util.find_spec(n) is None]  # delta imports pyspark
if missing:
    sys.exit(f"install_leadpipe: {missing} not installed in the venv")
for name in ("boto3", "psycopg", "phonenumbers", "usaddress", "nameparser", "pandas", "pyarrow", "yaml", "jinja2"):
    importlib.import_module(name)
import leadpipe

sources = sorted(p.stem for p in (path.parent / "sources").glob("*.yaml"))
print(f"install_leadpipe: leadpipe from {Path(leadpipe.__file__).parent}; sources {sources}", file=sys.stderr)
PY
log "done"
