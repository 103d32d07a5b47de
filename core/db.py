"""Engines and sessions for the job store: SQLite (WAL) or Postgres, the same models."""

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, create_engine


def _sqlite_engine(url: str, begin: str, pool: dict[str, Any]) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000",
                       "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


class WriterTurn:
    """SQLite's one writer, taken in turns: a process's threads queue on a lock, and the
    thread whose turn it is queues with other processes on an exclusive `flock` of a file
    beside the database, which the kernel hands over the moment its holder lets go. Without
    it, a writer that finds another process writing waits in SQLite's busy handler, whose
    sleeps grow to 100 ms a try, while the other process takes turn after turn."""

    def __init__(self, path: str) -> None:
        self._threads = threading.RLock()
        self._depth = 0
        self._path = f"{path}-writer"
        self._fd, self._pid = -1, 0

    def _file(self) -> int:
        """This process's own open file: a forked child (a prefork pool's) shares its
        parent's, and with it the parent's lock, so it opens the file again."""
        if self._pid != os.getpid():
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
        self._depth += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        if self._pid == os.getpid():
            os.close(self._fd)
            self._pid = 0


class Database:
    """The job store's connections: `read()` for queries, `write()` for transactions.

    On SQLite a read is one transaction (one snapshot for all its statements); on Postgres
    each of its statements commits on its own (`AUTOCOMMIT`), as READ COMMITTED would see
    them anyway, so nothing in a read may rely on a transaction (`SET LOCAL`, a lock held to
    its end)."""

    def __init__(self, url: str, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # Threads of a worker wait for a connection rather than fail: a step holds one only
        # while it records, so a small pool serves hundreds of concurrent steps.
        pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": 60}
        if self.is_sqlite:
            # Writers take the lock up front: a deferred transaction that later writes can
            # fail with SQLITE_BUSY instead of waiting when another writer got there first.
            self._reader = _sqlite_engine(url, "BEGIN", pool)
            self._writer = _sqlite_engine(url, "BEGIN IMMEDIATE", pool)
        else:
            self._writer = create_engine(url, pool_pre_ping=True, **pool)
            # Reads run without a transaction: under READ COMMITTED each statement sees the
            # latest commits anyway, so a BEGIN and a ROLLBACK around them (two round trips
            # a read) bought nothing; the pool is the writer's.
            self._reader = self._writer.execution_options(isolation_level="AUTOCOMMIT")
        # SQLite has one writer: writers queue for it (`WriterTurn`), handed the turn the
        # moment the last one commits, instead of each polling the file lock with SQLite's
        # growing sleeps (up to 100 ms a try) while hundreds of threads ask at once.
        path = make_url(url).database if self.is_sqlite else None
        self._turn: AbstractContextManager[Any] = (
            WriterTurn(path) if path and path != ":memory:" else
            threading.RLock() if self.is_sqlite else nullcontext())

    @property
    def engine(self) -> Engine:
        return self._writer

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self._reader, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._turn, Session(self._writer, expire_on_commit=False) as session, \
                session.begin():
            yield session

    def dispose(self) -> None:
        self._reader.dispose()
        self._writer.dispose()
        if isinstance(self._turn, WriterTurn):
            self._turn.close()


@contextmanager
def pipelined(session: Session) -> Iterator[None]:
    """Writes sent without waiting for each one's answer: on Postgres all of the block's
    statements go in one round trip (psycopg's pipeline mode), their first error raised on
    leaving it as SQLAlchemy's error for it (a `DataError`, an `IntegrityError`…), as if its
    statement had raised it; elsewhere nothing changes. Nothing in the block may read what a
    statement returned (a SELECT's rows, a `rowcount`): it arrives only at the end."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield
        return
    raw = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)
    try:
        with raw.pipeline():
            yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg.Error,
                                  dialect=connection.dialect) from exc
