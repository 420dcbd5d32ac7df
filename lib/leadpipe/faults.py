"""Fault injection: real process deaths at named points of the run, for the kill tests.

``LEADPIPE_FAULT=<point>`` makes the job SIGKILL itself when it reaches that point: no
exception handler, ``finally`` block or shutdown hook runs, exactly as when a spot node is lost
or the kernel's OOM killer strikes. The points, in the order a run passes them:

``after_read``       the snapshot is read, standardized and validated (in memory only)
``after_bronze``     bronze and quarantine are written, the MERGE is not
``after_merge``      a MERGE is committed to the leads table, nothing is delivered
``during_staging``   rows are landing in the PostgreSQL staging table (``delivery_method: copy``
                     or ``jdbc``), nothing is published
``before_pg_commit`` the default direct delivery's COPY is done: the leads are in PostgreSQL in
                     the open delivery transaction, the ledger row is not written, nothing is
                     committed
``after_pg_commit``  the delivery transaction is committed, the run is not finished
``before_archive``   delivered; the first file is about to be copied to the archive
``at_end``           everything is done, the summary is not printed

``LEADPIPE_FAULT=<point>:<n>`` dies the n-th time the point is reached (default 1). With the
variable unset, ``reach`` costs one dictionary look-up. A process that leads its own process
group (a job started in a session of its own) takes the whole group down, JVM included, as a
lost node would; otherwise it kills itself alone.

Tests that need something other than a death at a point (stopping the real PostgreSQL server
after the MERGE) register an in-process callback with :func:`on`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

ENV = "LEADPIPE_FAULT"
POINTS = (
    "after_read",
    "after_bronze",
    "after_merge",
    "during_staging",
    "before_pg_commit",
    "after_pg_commit",
    "before_archive",
    "at_end",
)

_seen: dict[str, int] = {}
_callbacks: dict[str, list] = {}


def on(point: str, callback) -> None:
    """Call ``callback()`` every time ``point`` is reached in this process (tests)."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; points: {', '.join(POINTS)}")
    _callbacks.setdefault(point, []).append(callback)


def clear() -> None:
    _callbacks.clear()


def armed(point: str) -> bool:
    """True when this reach of ``point`` is the one that must die (counts the reach)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    name, _, nth = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown point {name!r}; points: {', '.join(POINTS)}")
    if name != point:
        return False
    _seen[point] = _seen.get(point, 0) + 1
    return _seen[point] == int(nth or 1)


def die(point: str) -> None:
    """SIGKILL this process now (the JVM child of a Python driver dies with it)."""
    log.warning("fault injection: %s=%s: killing process %d with SIGKILL", ENV, point, os.getpid())
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.getpgid(0) == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def reach(point: str) -> None:
    """Die here when ``LEADPIPE_FAULT`` names this point (and this is the n-th reach)."""
    for callback in _callbacks.get(point, ()):
        callback()
    if armed(point):
        die(point)


def watch(point: str, condition, interval: float = 0.02) -> None:
    """Die as soon as ``condition()`` is true, checked from a daemon thread every ``interval``
    seconds while the main thread goes on (e.g. with a Spark write running in the JVM)."""
    import threading
    import time

    def loop() -> None:
        while True:
            try:
                if condition():
                    die(point)
            except Exception:  # the condition may fail while its target is being created
                pass
            time.sleep(interval)

    threading.Thread(target=loop, name=f"fault-{point}", daemon=True).start()
