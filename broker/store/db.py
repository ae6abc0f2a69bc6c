"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

WRITE_OPTION = "msmt_write"
# A connection that runs one read statement and nothing else: on SQLite it needs no BEGIN (the
# statement is its own transaction); elsewhere the option changes nothing.
SINGLE_READ_OPTION = "msmt_single_read"


def _migrations() -> Path:
    """The Alembic scripts: shipped inside the installed package (broker/_migrations, mapped
    from the top-level migrations/ by pyproject.toml), else, in a source checkout or an
    editable install, the repository's migrations/ itself."""
    shipped = Path(str(importlib.resources.files("broker") / "_migrations"))
    if (shipped / "env.py").is_file():
        return shipped
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS = _migrations()


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


PRIVATE_FOLDER_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _private_sqlite_file(path: Path) -> None:
    """Create the database's missing folders (0700) and the file itself (0600) before SQLite
    does: SQLite creates files by the process umask (often world-readable) and gives its -wal
    and -shm files the database file's mode."""
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=PRIVATE_FOLDER_MODE)
            os.chmod(folder, PRIVATE_FOLDER_MODE)  # mkdir's mode is narrowed by the umask only
    # an empty file is an empty database to SQLite; an existing one is left as it is
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    _tighten(path)


def _tighten(path: Path) -> None:
    """Make the database and its side files owner-only (a file made earlier may be wider)."""
    for suffix in SQLITE_SIDE_FILES:
        file = Path(f"{path}{suffix}")
        with contextlib.suppress(OSError):  # absent, or owned by someone else: nothing to do
            if file.stat().st_mode & 0o077:
                os.chmod(file, PRIVATE_FILE_MODE)


# SQLite primary result codes after which a connection is discarded (see make_engine):
# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN.
SQLITE_RECONNECT_CODES = frozenset({8, 10, 13, 14})

# PostgreSQL session limits (seconds): no statement waits longer than this for a lock, and a
# session that sits idle inside a transaction (a broker process paused or hung mid-commit) is
# ended by the server, releasing its locks, after this long. Settings can override them.


def writable(path: Path) -> bool:
    """Whether SQLite can open the database and its -wal and -shm files for writing now.

    A connection opened while the file system is read-only is read-only for good (SQLite
    falls back to a read-only open), and worse: SQLite shares one -shm mapping among all the
    connections of a process to one file, opened by whichever connection comes first and kept
    while any of them is open. A read-only connection that comes first leaves a read-only
    mapping that every later connection shares, so while the pool keeps one connection open
    no write succeeds again, the file system writable or not. So no connection is opened
    while the files cannot be written; the outage is answered 503 until they can."""
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    return os.access(path.parent, os.W_OK) and all(
        os.access(file, os.W_OK) for file in files if file.exists()
    )


def _read_only_error(path: Path) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(
        f"the database {path.name} cannot be written now (read-only file system?)"
    )
    error.sqlite_errorcode = 8  # SQLITE_READONLY: an outage (503), the pool starts afresh
    error.sqlite_errorname = "SQLITE_READONLY"
    return error


LOCK_TIMEOUT_S = float(os.environ.get("MSMT_DB_LOCK_TIMEOUT_S", "5"))
IDLE_IN_TRANSACTION_TIMEOUT_S = float(os.environ.get("MSMT_DB_IDLE_IN_TRANSACTION_TIMEOUT_S", "30"))


# Pages of 16 KiB, not SQLite's 4 KiB, for a new database: an envelope (~20 KB for 11
# recipients) then fills two overflow pages instead of five, and a batch's commit writes the
# WAL (and a checkpoint copies it back) in fewer than half as many system calls. Measured: the
# store's CPU per item -12% in five alternating pairs, -15-20% in a quieter hour (bench/store.py;
# bench/README.md, ninth session); 8 KiB gained less, 32 and 64 KiB less again (each commit
# rewrites whole index pages).
SQLITE_PAGE_SIZE = 16384
WAL_BACKSTOP_PAGES = 4096  # store/checkpoint.py: 64 MiB of WAL in pages of 16 KiB


def make_engine(url: str, **kwargs: Any) -> Engine:
    if is_sqlite(url):
        database = make_url(url).database
        path = (
            Path(database)
            if database and database != ":memory:" and not database.startswith("file:")
            else None
        )
        if path is not None:
            _private_sqlite_file(path)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            if path is not None and not writable(path):
                # Refused before it reads anything: see writable.
                dbapi_connection.close()
                raise _read_only_error(path)
            # Let SQLAlchemy, not the driver, issue BEGIN (see SQLAlchemy's pysqlite notes).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            # Before the WAL and the first table exist, so only a new database takes it: an
            # existing one keeps its page size (docs/operations.md).
            cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # a 2xx means durably committed
            cursor.execute("PRAGMA foreign_keys=ON")
            # a server process copies the WAL back on a thread of its own (store/checkpoint.py);
            # a commit does it itself only past this backstop
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            cursor.close()
            if path is not None:
                _tighten(path)  # -wal and -shm exist now

        @event.listens_for(engine, "handle_error")
        def _stale_connection(context: Any) -> None:
            # A connection that met a read-only or failing file system may stay broken after the
            # file system is back: one opened while it was read-only is read-only for good
            # (SQLite falls back to a read-only open). Treat these errors as a lost connection:
            # SQLAlchemy then drops it and every pooled one, and opens fresh ones on demand.
            code = getattr(context.original_exception, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in SQLITE_RECONNECT_CODES:
                context.is_disconnect = True

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # A unit of work takes the write lock up front (no deadlocked read-to-write
            # upgrades); a read begins a plain snapshot and never waits for a writer (WAL).
            options = connection.get_execution_options()
            if options.get(SINGLE_READ_OPTION, False):
                return
            connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION, False) else "BEGIN")

        return engine
    # A database host that does not answer fails a connection in 5 s, not the OS's minutes.
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    engine = create_engine(url, pool_pre_ping=True, **kwargs)

    @event.listens_for(engine, "connect")
    def _limits(dbapi_connection: Any, _record: Any) -> None:
        # One broker that hangs holding a lock must not stall the others: their waits end with
        # a lock-timeout error (answered 503 + Retry-After) and the server ends the hung
        # transaction. SET, not connection options: a URL's own `options` stay untouched.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_S * 1000)}")
            cursor.execute(
                f"SET idle_in_transaction_session_timeout = {int(IDLE_IN_TRANSACTION_TIMEOUT_S * 1000)}"
            )
        dbapi_connection.commit()

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception. (A session used
    without this only reads: on SQLite it never takes the write lock.)"""
    with factory() as session, session.begin():
        session.connection(execution_options={WRITE_OPTION: True})
        yield session


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
