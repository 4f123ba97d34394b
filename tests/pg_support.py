"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, a free loopback port.

The binaries are looked up on PATH, then in Debian's /usr/lib/postgresql/<version>/bin (the
`postgresql` package; `./dev setup` installs it when it is missing and apt-get is there). As
root, the server runs as the `postgres` user (else `nobody`): PostgreSQL refuses to run as root.
Where PostgreSQL is missing the tests skip, except in CI (CI=true), where they fail.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

PG_USER = "brickyard"
# A password with URL-special characters: every URL we build must escape it.
PG_PASSWORD = "s3cr:t@pg/1"
TOOLS = ("initdb", "postgres", "pg_ctl")


def _version_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.\-]", path.parent.name))


def find_bin_dir() -> Path | None:
    """The folder holding initdb, postgres and pg_ctl (PATH first, then the newest Debian version)."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin")), key=_version_key, reverse=True)
    for folder in candidates:
        if all(os.access(folder / t, os.X_OK) for t in TOOLS):
            return folder
    return None


def require_bin_dir() -> Path:
    """The binaries, or skip (fail in CI) saying how to get them."""
    folder = find_bin_dir()
    if folder is None:
        message = ("PostgreSQL server binaries (initdb, postgres, pg_ctl) not found on PATH or in "
                   "/usr/lib/postgresql/*/bin; run ./dev setup as root (apt-get install postgresql)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster of our own, with a password-protected superuser `brickyard`."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.root = Path(tempfile.mkdtemp(prefix="brickyard-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.run_as = self._run_as_user()

    @staticmethod
    def _run_as_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")

    def _popen_args(self) -> dict:
        if self.run_as is None:
            return {}
        return {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> None:
        if self.run_as is not None:
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.run_as is not None:
            os.chown(pwfile, self.run_as.pw_uid, self.run_as.pw_gid)
        out = subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", PG_USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, cwd=self.root, **self._popen_args(),
        )
        pwfile.unlink()
        if out.returncode:
            raise RuntimeError(f"initdb failed ({out.returncode}): {out.stdout[-2000:]}{out.stderr[-2000:]}")
        for _attempt in range(3):  # the free port may be taken between the check and the bind
            self.port = _free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [str(self.bin_dir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                     "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=200"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                    start_new_session=True, **self._popen_args(),
                )
            if self._wait_ready(timeout):
                return
            self.proc.wait()
        raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text(errors='replace')[-3000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.proc.kill()
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- addresses ------------------------------------------------------------------------
    def dsn(self, database: str) -> str:
        """A libpq connection string (for psycopg)."""
        return f"host=127.0.0.1 port={self.port} user={PG_USER} password='{PG_PASSWORD}' dbname={database}"

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL, password escaped."""
        return f"{driver}://{PG_USER}:{quote(PG_PASSWORD, safe='')}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.dsn(database)) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL server for the module (skipped without binaries, failed in CI)."""
    server = PostgresServer(require_bin_dir())
    try:
        server.start()
        yield server
    finally:
        server.stop()
