"""Run control in PostgreSQL: one writer per warehouse, and a record of every run.

**The lock.** A run holds a PostgreSQL *session-level* advisory lock keyed by its warehouse
location for its whole life, on a connection of its own. A second run on the same warehouse
finds it taken and refuses to start (:class:`RunLocked`, exit status 4). The lock belongs to
the connection, so it dies with the process: a killed run never blocks the next one. A host
that vanishes without closing its socket (a lost node, a partition) is noticed by TCP
keepalives set on both ends of the lock connection (about a minute), after which the server
drops the session and its lock. The lock connection must reach PostgreSQL directly (or through
a session-pooling proxy): a transaction pooler would hand the lock to another session. Before
every MERGE and before delivery the run checks its lock connection (:meth:`RunLock.check`). If
PostgreSQL went away meanwhile, the lock went with it: the run reconnects (bounded retries) and
takes the lock again, or stops with :class:`LockLost` when another run has it or the server
stays unreachable. A run that re-took its lock re-reads the leads table's state before it goes on.

**The record.** ``pipeline_runs`` has one row per run id: input, warehouse, started, finished,
status, per-source counts, leads delivered, errors, the summary and the report's path. It is written when the run starts
(``running``) and when it ends; delivery adds its count in the same transaction as the leads.
A row still ``running`` whose lock is free belongs to a run that died: the next run on the
warehouse marks it ``abandoned``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from psycopg import sql

from leadpipe.postgres import DbTarget

log = logging.getLogger(__name__)

RUNS_TABLE = "pipeline_runs"


#: Client-side TCP keepalives (libpq).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
#: A bound on any statement of the lock connection.
LOCK_OPTIONS = "-c statement_timeout=30000"
#: Server-side keepalives: a vanished client is dropped, with its locks and open transaction.
SERVER_KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


def keepalive_connect(db: DbTarget, **kwargs):
    """An autocommit connection with TCP keepalives on both ends (``KEEPALIVES``,
    ``SERVER_KEEPALIVES``): either side drops a vanished peer within about a minute."""
    conn = db.connect(autocommit=True, **KEEPALIVES, **kwargs)
    for setting, value in SERVER_KEEPALIVES.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(setting), sql.Literal(value)))
    return conn


class RunLocked(RuntimeError):
    """Another run holds the warehouse's lock."""


class LockLost(RuntimeError):
    """The connection holding the run lock died: another run may now hold it."""


def normalize_location(location: str) -> str:
    """One spelling per location: ``s3://`` and ``s3a://`` name the same bucket."""
    loc = location.rstrip("/")
    for scheme in ("s3a://", "s3n://"):
        if loc.startswith(scheme):
            loc = "s3://" + loc[len(scheme) :]
    if loc.startswith("file:"):
        loc = "/" + loc.removeprefix("file:").lstrip("/")
    return loc


def lock_key(warehouse: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of a warehouse location."""
    digest = hashlib.sha256(("leadpipe-run:" + normalize_location(warehouse)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def ensure_run_table(conn, schema: str) -> None:
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " run_id text PRIMARY KEY, warehouse text NOT NULL, input text, status text NOT NULL,"
            " started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,"
            " attempts integer NOT NULL DEFAULT 1, sources jsonb, delivered integer NOT NULL DEFAULT 0,"
            " errors jsonb, summary jsonb, report text)"
        ).format(sql.Identifier(schema, RUNS_TABLE))
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS report text").format(sql.Identifier(schema, RUNS_TABLE))
    )


class RunLock:
    """The warehouse's run lock (see the module doc). Use as a context manager."""

    def __init__(self, db: DbTarget, warehouse: str, schema: str = "public"):
        self.db = db
        self.warehouse = normalize_location(warehouse)
        self.schema = schema
        self.key = lock_key(warehouse)
        self.conn = None
        self.backend_pid: int | None = None  # the server process holding the lock for this run

    def _connect(self):
        return keepalive_connect(self.db, options=LOCK_OPTIONS)

    def acquire(self, run_id: str) -> None:
        self.conn = self._connect()
        got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
        if not got and self.backend_pid is not None and self._terminate_own_stale_session():
            got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
        if not got:
            holder = self._holder()
            self.conn.close()
            self.conn = None
            raise RunLocked(
                f"another run holds the lock on warehouse {self.warehouse}{holder}; this run ({run_id}) did not "
                "start. Wait for it to finish (a killed run releases the lock at once)."
            )
        self.backend_pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        log.info("lock: run %s holds the lock on %s", run_id, self.warehouse)

    def _holds(self) -> bool:
        """Whether this connection's server session holds the lock (pg_locks, not just alive)."""
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        return self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND pid = pg_backend_pid() AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)",
            (high, low),
        ).fetchone()[0]

    def _terminate_own_stale_session(self) -> bool:
        """This run's earlier session still holds the lock although this process lost its
        connection (a half-open socket): end that session so the lock can be taken again."""
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        row = self.conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::bigint::oid "
            "AND objid = %s::bigint::oid AND objsubid = 1",
            (high, low),
        ).fetchone()
        if row is None or row[0] != self.backend_pid:
            return False
        log.warning("lock: ending this run's stale session (pid %d) that still holds the lock", row[0])
        self.conn.execute("SELECT pg_terminate_backend(%s, 10000)", (row[0],))
        return True

    def _holder(self) -> str:
        try:
            row = self.conn.execute(
                sql.SQL(
                    "SELECT run_id, started_at FROM {} WHERE warehouse = %s AND status = 'running' "
                    "ORDER BY started_at DESC LIMIT 1"
                ).format(sql.Identifier(self.schema, RUNS_TABLE)),
                (self.warehouse,),
            ).fetchone()
        except Exception:  # the run table may not exist yet
            return ""
        return f" (run {row[0]}, started {row[1]:%Y-%m-%d %H:%M:%S %Z})" if row else ""

    def check(self, run_id: str) -> bool:
        """True when the lock is held as before; False when it was lost and taken again (the
        caller re-reads shared state). Raises :class:`LockLost` when it cannot be taken again,
        :class:`leadpipe.postgres.DatabaseUnreachable` when the server stays away."""
        try:
            if self.conn is not None and not self.conn.closed and self._holds():
                return True
            log.warning("lock: this run's session no longer holds the run lock; taking it again")
        except Exception as exc:
            log.warning(
                "lock: the connection holding the run lock died (%s); taking the lock again", type(exc).__name__
            )
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
        try:
            self.acquire(run_id)
        except RunLocked as exc:
            raise LockLost(f"the run lock on {self.warehouse} was lost while PostgreSQL was away: {exc}") from None
        return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                self.conn.close()
            except Exception:  # a dead connection has released the lock already
                pass
            self.conn = None


class RunRecord:
    """Writes the run's ``pipeline_runs`` row."""

    def __init__(self, db: DbTarget, schema: str = "public"):
        self.db = db
        self.schema = schema

    def _table(self) -> sql.Composed:
        return sql.Identifier(self.schema, RUNS_TABLE)

    def start(self, conn, run_id: str, warehouse: str, input_uri: str) -> int:
        """Insert (or, for a retried run id, restart) the row; mark dead runs ``abandoned``.
        Returns how many rows were marked abandoned. Call while holding the run lock."""
        ensure_run_table(conn, self.schema)
        wh = normalize_location(warehouse)
        abandoned = conn.execute(
            sql.SQL(
                "UPDATE {} SET status = 'abandoned', finished_at = now(), "
                "errors = coalesce(errors, '[]'::jsonb) || %s::jsonb "
                "WHERE warehouse = %s AND status = 'running' AND run_id <> %s"
            ).format(self._table()),
            (json.dumps(["the process died before finishing (its lock was free)"]), wh, run_id),
        ).rowcount
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, warehouse, input, status) VALUES (%s, %s, %s, 'running') "
                "ON CONFLICT (run_id) DO UPDATE SET status = 'running', started_at = now(), finished_at = NULL, "
                "attempts = {}.attempts + 1, input = EXCLUDED.input, warehouse = EXCLUDED.warehouse, errors = NULL, "
                "sources = NULL, summary = NULL, report = NULL"
            ).format(self._table(), sql.Identifier(RUNS_TABLE)),
            (run_id, wh, input_uri),
        )
        if abandoned:
            log.warning("run: marked %d earlier run(s) on this warehouse abandoned (they died)", abandoned)
        return abandoned

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the final status, counts and errors (the delivered count is delivery's)."""
        with self.db.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = %s, finished_at = now(), sources = %s::jsonb, errors = %s::jsonb, "
                    "summary = %s::jsonb WHERE run_id = %s"
                ).format(self._table()),
                (
                    summary["status"],
                    json.dumps(summary.get("sources", {}), default=str),
                    json.dumps(summary.get("errors", []), default=str),
                    json.dumps(summary, default=str),
                    summary["run_id"],
                ),
            )
