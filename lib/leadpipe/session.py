"""The SparkSession: Delta, ANSI mode, the legacy charsets the agencies' cp1252 files need.

S3 follows the AWS conventions (:func:`s3_conf`): ``s3://`` and ``s3a://`` read through S3A
(hadoop-aws and the AWS SDK v2 modules it needs are in the jars), the endpoint comes from
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, credentials from the default chain.

Jars are never downloaded at run time. They come from the folder that ``make jars`` fills from
Maven Central (``bootstrap/pom.xml``). Under ``spark-submit`` the driver's class path is fixed
before this code runs, so ``make`` also writes them into the venv's ``spark-defaults.conf``
(see ``spark_defaults``); when Python starts the JVM itself (tests, the console script),
``spark.jars`` is set here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Delta's session extension and catalog (also on the EMR step's command line: emr.py)
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

BASE_CONF = {
    **DELTA_CONF,
    "spark.sql.ansi.enabled": "true",
    # Spark 4 CSV accepts only a few charsets unless this is on (cp1252 agency exports).
    "spark.sql.legacy.javaCharsets": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    # Compiled classes are cached by their code; a snapshot's plans (rules, MERGE, bronze, counts)
    # generate about 250 classes, and Spark's default cache of 100 evicts them before the next
    # snapshot, so a backfill compiled every class again for every snapshot (Janino was a third of
    # the CPU). See expressions.date_value for the other half of that fix.
    "spark.sql.codegen.cache.maxEntries": "2000",
    # PySpark's DataFrame debugging records the Python call site of every Column function in the
    # JVM (active session, conf, set, clear): it doubles the round trips of building a plan, and
    # a small backfill made 16,000 py4j calls per snapshot with it, 6,200 without. A Spark error
    # still names the expression; only the Python line of its query context is lost. Read once,
    # when the first expression is built: it must be set here (tests/test_session.py).
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}

#: HotSpot compiler directives for the job's driver JVM when it runs the tasks itself (local
#: mode): the projections Spark generates for a source's rules (hundreds of expressions, classes
#: named ``GeneratedClass$SpecificUnsafeProjection``) stay with the first-tier compiler (C1) and
#: never go to C2. C2 spent about 100 CPU seconds of a 1M-row week compiling them, on a second
#: core the tasks needed; C1's code for them is ready at once. See README "Performance".
JIT_DIRECTIVES = Path(__file__).resolve().parent / "jit-directives.json"
#: Where ``make jars`` copies them, beside the spark-defaults.conf that names them (that file
#: outlives a checkout: it must not point into one).
DEFAULTS_DIRECTIVES = "leadpipe-jit-directives.json"
#: JVM options that choose a collector (two on one command line stop a JVM from starting).
GC_CHOSEN = re.compile(r"-XX:\+Use\w*GC\b")
#: Environment variables whose options every JVM started here reads.
JAVA_ENV_OPTIONS = ("JDK_JAVA_OPTIONS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")


def jit_options(directives: Path = JIT_DIRECTIVES) -> str:
    """The driver JVM options that load ``directives`` (HotSpot's message about them goes to
    stderr, not to the job's stdout). A path with a space is quoted, as Spark's launcher reads
    ``extraJavaOptions``."""
    path = f'"{directives}"' if re.search(r"\s", str(directives)) else str(directives)
    return f"-XX:+UnlockDiagnosticVMOptions -XX:CompilerDirectivesFile={path} -XX:+DisplayVMOutputToStderr"


def local_launch_conf(
    launch_conf: dict[str, str] | None,
    directives: Path = JIT_DIRECTIVES,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Settings' ``spark_submit`` for a driver started on this machine, whose JVM runs the tasks:
    after any ``spark.driver.extraJavaOptions`` of the settings, :func:`jit_options` (left out,
    with a warning, when ``directives`` is not a file: a JVM refuses to start without it) and the
    parallel collector (a batch job's: no concurrent marking threads taking the cores; the cold
    1M-row week 1 took 123.6/124.5 s with it against 133.5/131.4 s with G1, the JVM's default),
    unless the driver options or ``env``'s Java option variables (:data:`JAVA_ENV_OPTIONS`;
    default: this process's environment) choose a collector already."""
    conf = dict(launch_conf or {})
    env = os.environ if env is None else env
    key = "spark.driver.extraJavaOptions"
    mine = conf.get(key, "")
    chosen = [mine, conf.get("spark.driver.defaultJavaOptions", ""), *(env.get(v, "") for v in JAVA_ENV_OPTIONS)]
    added = []
    if directives.is_file():
        added.append(jit_options(directives))
    else:
        log.warning("spark: no JIT directives at %s: the driver JVM starts without them", directives)
    if not any(GC_CHOSEN.search(o) for o in chosen):
        added.append("-XX:+UseParallelGC")
    conf[key] = " ".join([mine, *added]).strip()
    return conf


REQUIRED_JARS = ("delta-spark_", "delta-storage-", "postgresql-", "hadoop-aws-")


def s3_conf(env: dict[str, str] | None = None) -> dict[str, str]:
    """Hadoop settings for S3 that follow the AWS conventions, so that one command works against
    AWS and a local S3 server: ``s3://`` and ``s3a://`` both read through S3A; the endpoint comes
    from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (with path-style access, which local
    servers need), the region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; credentials from
    S3A's default chain (the ``AWS_*`` variables, then the instance profile on EMR)."""
    env = os.environ if env is None else env
    conf = {
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
    }
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if endpoint:
        conf["fs.s3a.endpoint"] = endpoint
        conf["fs.s3a.path.style.access"] = "true"
        conf["fs.s3a.endpoint.region"] = region or "us-east-1"
        if endpoint.startswith("http://"):
            conf["fs.s3a.connection.ssl.enabled"] = "false"
    elif region:
        conf["fs.s3a.endpoint.region"] = region
    return conf


def configure_s3(spark: SparkSession, env: dict[str, str] | None = None) -> None:
    """Apply :func:`s3_conf` to a running session's Hadoop configuration (the one discovery and
    Delta use). File systems already opened keep their settings: call before the first S3 access."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for k, v in s3_conf(env).items():
        hadoop.set(k, v)


class JarsMissing(RuntimeError):
    pass


def find_jars(jars_dir: str | Path | None = None) -> list[str]:
    """The jar files to hand to Spark: ``LEADPIPE_JARS_DIR``, else ``jars_dir``, else ./jars
    (relative folders are relative to the working directory)."""
    candidates = [os.environ.get("LEADPIPE_JARS_DIR"), jars_dir, "jars"]
    for c in candidates:
        if not c:
            continue
        d = Path(c).resolve()
        jars = sorted(str(p) for p in d.glob("*.jar"))
        if jars:
            missing = [r for r in REQUIRED_JARS if not any(Path(j).name.startswith(r) for j in jars)]
            if missing:
                raise JarsMissing(f"{d}: no jar named {missing}*; run `make jars`")
            return jars
    raise JarsMissing(f"no jars found in {[str(c) for c in candidates if c]}; run `make jars`")


def spark_defaults(
    jars: list[str], launch_conf: dict[str, str] | None = None, directives: Path = JIT_DIRECTIVES
) -> str:
    """spark-defaults.conf text that puts ``jars`` on spark-submit's driver and executors and
    sets what Spark reads only at launch: ``spark_submit`` in settings (driver memory), then the
    local driver's JVM options (:func:`local_launch_conf` with ``directives``; a collector chosen
    in the Java option variables when spark-submit runs is not known here: choose it in the
    settings' ``spark.driver.extraJavaOptions`` instead)."""
    lines = [
        "# written by `make jars`: the leads job's JVM jars (bootstrap/pom.xml)",
        f"spark.jars {','.join(jars)}",
        "# Spark's own log level from the start; the job logs one line per stage (conf/settings.yaml)",
        "spark.log.level WARN",
        "# settings.yaml 'spark_submit' (read when the driver JVM starts; a --conf or --driver-memory flag wins),",
        "# and the JIT directives for a local driver (session.jit_options)",
        *[f"{k} {v}" for k, v in sorted(local_launch_conf(launch_conf, directives, env={}).items())],
    ]
    return "\n".join(lines) + "\n"


def build_session(
    app_name: str = "weekly-leads",
    master: str | None = None,
    extra_conf: dict[str, str] | None = None,
    jars_dir: str | Path | None = None,
    log_level: str = "WARN",
    launch_conf: dict[str, str] | None = None,
) -> SparkSession:
    """Get or create the session. ``master`` defaults to spark-submit's, else ``local[*]``.
    ``launch_conf`` (settings ``spark_submit``: driver memory) applies when this call starts the
    JVM; under spark-submit it came from spark-defaults.conf or the command line, and the driver's
    actual memory is logged."""
    # Python workers must run this interpreter (the venv with leadpipe and its libraries), not
    # whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    existing = SparkSession.getActiveSession()
    conf = dict(BASE_CONF)
    if existing is None and not _under_spark_submit():
        conf["spark.jars"] = ",".join(find_jars(jars_dir))
        conf.setdefault("spark.master", master or "local[*]")
        conf.update(local_launch_conf(launch_conf))
    elif master:
        conf["spark.master"] = master
    conf["spark.log.level"] = log_level  # applied when the SparkContext starts
    conf.update({f"spark.hadoop.{k}": v for k, v in s3_conf().items()})
    conf.update(extra_conf or {})
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    # Spark's own INFO chatter drowns the job's one-line-per-stage log; the level is a setting
    spark.sparkContext.setLogLevel(log_level)
    configure_s3(spark)  # also when the context existed before this call (spark.hadoop.* would not apply)
    _check_delta(spark)
    _log_memory(spark, launch_conf or {})
    return spark


def _log_memory(spark: SparkSession, launch_conf: dict[str, str]) -> None:
    conf = spark.sparkContext.getConf()
    runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    heap = runtime.maxMemory() / 2**30
    wanted = launch_conf.get("spark.driver.memory")
    actual = conf.get("spark.driver.memory", "1g")
    log.info("spark: master %s, driver heap %.1f GiB (spark.driver.memory %s)", conf.get("spark.master"), heap, actual)
    if wanted and actual != wanted and _bytes(actual) < _bytes(wanted):  # more than asked: a flag, on purpose
        log.warning(
            "spark: the driver runs with spark.driver.memory %s, less than settings 'spark_submit' say (%s): run "
            "`make jars` to rewrite spark-defaults.conf, or pass --driver-memory %s",
            actual,
            wanted,
            wanted,
        )


def _bytes(size: str) -> float:
    """A JVM memory size (``512m``, ``4g``, ``4096``: MiB when no unit) in bytes; 0 when unreadable
    (settings' sizes are checked at load: config.MEMORY)."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    text = size.strip().lower()
    text = text[:-1] if len(text) > 1 and text[-1] == "b" and text[-2] in units else text  # 2gb = 2g
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text) * 2**20
    except ValueError:
        return 0.0


def _under_spark_submit() -> bool:
    # pyspark sets PYSPARK_GATEWAY_PORT when spark-submit launched this Python process
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _check_delta(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName(
            "io.delta.tables.DeltaTable", True, jvm.Thread.currentThread().getContextClassLoader()
        )
    except Exception:
        raise JarsMissing(
            "Delta Lake classes are not on the driver class path. Run `make jars` (it writes the "
            "jars into the venv's spark-defaults.conf) or pass them with spark-submit --jars."
        ) from None


def write_spark_defaults(jars_dir: str | Path | None = None, launch_conf: dict[str, str] | None = None) -> Path:
    """Write the venv's ``pyspark/conf/spark-defaults.conf`` so that the venv's spark-submit
    puts the jars on the driver's class path and starts the driver with the settings'
    ``spark_submit`` and the local driver's JVM options, whose JIT directives are copied beside
    it (called by ``make jars``)."""
    import pyspark

    conf_dir = Path(pyspark.__file__).resolve().parent / "conf"
    conf_dir.mkdir(exist_ok=True)
    target = conf_dir / "spark-defaults.conf"
    directives = conf_dir / DEFAULTS_DIRECTIVES
    shutil.copyfile(JIT_DIRECTIVES, directives)
    target.write_text(spark_defaults(find_jars(jars_dir), launch_conf, directives))
    return target


if __name__ == "__main__":
    from leadpipe.config import load_settings

    _settings = load_settings(sys.argv[1] if len(sys.argv) > 1 else None)  # None: $LEADPIPE_CONF_DIR, else packaged
    print(f"wrote {write_spark_defaults(_settings.jars_dir, launch_conf=_settings.spark_submit)}")


@contextlib.contextmanager
def session_conf(spark: SparkSession, conf: dict[str, str]):
    """Set SQL settings for the plans made inside the block, then restore them."""
    before = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


# A source's rules are hundreds of expressions over one row; fused into one whole-stage-codegen
# method they outgrow the JVM's 64 KB method limit, and Spark logs the failed source at ERROR
# before falling back. The standardized rows are planned once (when cached) without it.
RULES_PLAN_CONF = {"spark.sql.codegen.wholeStage": "false"}
