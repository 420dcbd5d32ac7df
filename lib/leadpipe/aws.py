"""AWS at the edges: the database password from Secrets Manager, run alerts to SNS (boto3).

Both follow the AWS conventions (the default credential chain, ``AWS_REGION``, and the endpoint
from ``AWS_ENDPOINT_URL_<SERVICE>`` / ``AWS_ENDPOINT_URL``, which boto3 reads itself), so they
work the same against AWS and a local server.

- **Password**: ``PGPASSWORD`` wins (the libpq convention); else, when settings name
  ``postgres.password_secret``, its ``SecretString``: a JSON object's ``password`` (the shape
  of an RDS-managed secret) or the whole string. Never logged, never in the summary.
- **Alerts**: when settings name ``alerts.sns_topic_arn``, every run that got as far as reading
  its settings publishes one message: ``FAILED``/``PARTIAL``/``LOCKED`` runs as an alert,
  succeeded runs as a short summary. The message holds counts, statuses and the run's error
  lines (file names and reasons), never a lead's values. A failure to publish is logged and
  never changes the run's exit status.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def s3_location(uri: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``s3://bucket/some/folder`` (or ``s3a://``): the prefix is empty or
    ends in exactly one slash, however many the URI has."""
    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _arn_region(name: str) -> str | None:
    """The region of an ARN (``arn:aws:sns:us-east-1:...``), else ``AWS_REGION`` (the variable
    the other AWS SDKs read; None lets boto3 use ``AWS_DEFAULT_REGION`` and its config files)."""
    parts = name.split(":")
    if name.startswith("arn:") and len(parts) > 4 and parts[3]:
        return parts[3]
    return os.environ.get("AWS_REGION")


class SecretError(RuntimeError):
    """The password secret could not be read."""


def database_password(secret_id: str | None) -> str | None:
    """``PGPASSWORD`` if set, else the password in Secrets Manager secret ``secret_id`` (None
    when neither is configured)."""
    if os.environ.get("PGPASSWORD") is not None or not secret_id:
        return os.environ.get("PGPASSWORD")
    import boto3

    try:
        client = boto3.client("secretsmanager", region_name=_arn_region(secret_id))
        value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except Exception as exc:
        raise SecretError(
            f"could not read the database password from Secrets Manager secret {secret_id!r}: {type(exc).__name__}"
        ) from None
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if isinstance(parsed, dict):
        if "password" not in parsed:
            raise SecretError(f"Secrets Manager secret {secret_id!r} is a JSON object without a 'password' key")
        return str(parsed["password"])
    return value


def run_message(summary: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) of a run's alert: what happened, per source, and what needs attention."""
    status = summary.get("status", "unknown")
    subject = f"leadpipe {'ALERT' if status != 'succeeded' else 'run'}: {status} ({summary.get('run_id', '?')})"
    lines = [
        f"run {summary.get('run_id')}: {status}",
        f"input {summary.get('input')}, warehouse {summary.get('warehouse')}",
        f"new leads delivered: {summary.get('delivered', 0)}",
    ]
    for sid, s in sorted((summary.get("sources") or {}).items()):
        statuses = ", ".join(f"{d} {st}" for d, st in sorted(s.get("statuses", {}).items()))
        lines.append(
            f"{sid}: {statuses}; {s.get('rows_read', 0)} read, {s.get('rows_rejected', 0)} quarantined, "
            f"{s.get('new', 0)} new, {s.get('changed', 0)} changed, {s.get('removed', 0)} removed"
        )
    if summary.get("rejected_files"):
        lines.append(f"rejected files by reason: {summary['rejected_files']}")
    if summary.get("missing_sources"):
        lines.append(f"missing sources: {summary['missing_sources']}")
    for e in (summary.get("errors") or [])[:10]:
        lines.append(f"error: {e}")
    return subject[:100], "\n".join(lines)


def publish_run(topic_arn: str | None, summary: dict[str, Any]) -> bool:
    """Publish the run's message to SNS; False (logged) when it could not be sent."""
    if not topic_arn:
        return False
    import boto3

    subject, body = run_message(summary)
    try:
        boto3.client("sns", region_name=_arn_region(topic_arn)).publish(
            TopicArn=topic_arn, Subject=subject, Message=body
        )
    except Exception as exc:
        log.error("alerts: could not publish to %s: %s: %s", topic_arn, type(exc).__name__, str(exc)[:300])
        return False
    log.info("alerts: run %s (%s) published to %s", summary.get("run_id"), summary.get("status"), topic_arn)
    return True
