"""The job's Spark session (session.build_session): settings that must be in place before the
first DataFrame is built, checked on the session the tests share (built by the same function)."""

from __future__ import annotations

import threading

from py4j.protocol import MEMORY_COMMAND_NAME
from pyspark.errors.utils import is_debugging_enabled
from pyspark.sql import functions as F


def _jvm_calls(spark, build) -> int:
    """How many calls to the JVM ``build()`` makes: commands sent from this thread, without py4j's
    garbage-collection messages (its finalizer thread sends those for objects of earlier tests)."""
    client = spark.sparkContext._gateway._gateway_client
    calls = []
    send = client.send_command
    me = threading.get_ident()

    def counting(command, *args, **kwargs):
        if threading.get_ident() == me and not command.startswith(MEMORY_COMMAND_NAME):
            calls.append(1)
        return send(command, *args, **kwargs)

    client.send_command = counting
    try:
        build()
    finally:
        del client.send_command  # the class's method again
    return len(calls)


def test_building_expressions_makes_half_the_jvm_calls_it_would_with_dataframe_debugging(spark):
    # PySpark's DataFrame debugging records each Column function's Python call site in the JVM
    # (active session, conf, set, clear: about three more round trips per function). It is read
    # once, when the first expression is built, so it must be off in the session's own settings.
    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"
    assert not is_debugging_enabled()
    calls = _jvm_calls(spark, lambda: [F.upper(F.trim(F.col(f"c{i}"))) for i in range(20)])
    # col, trim, upper: 180 calls measured with debugging off, 380 with it on
    assert 0 < calls < 20 * 3 * 4, calls


def test_the_driver_jvm_keeps_the_rules_projections_from_c2_with_directives_it_can_parse(spark):
    """The session's driver JVM (started by build_session, as the job's is) was launched with the
    JIT directives, and HotSpot parses the file: a file it cannot read stops a JVM from starting."""
    import shlex
    import subprocess
    from pathlib import Path

    from leadpipe.session import JIT_DIRECTIVES, jit_options

    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    launched = list(runtime.getInputArguments())
    assert f"-XX:CompilerDirectivesFile={JIT_DIRECTIVES}" in launched
    assert "-XX:+UnlockDiagnosticVMOptions" in launched
    java = Path(spark.sparkContext._jvm.java.lang.System.getProperty("java.home")) / "bin" / "java"  # Spark's
    done = subprocess.run([java, *shlex.split(jit_options()), "-version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 compiler directives added" in done.stderr  # on stderr: the job's stdout stays its own
    assert "compiler directives" not in done.stdout
