"""Many rows, one statement, without SQLAlchemy's per-row work: the submit path's bulk writes.

A batch of 50 submissions to 11 recipients writes ~1,400 rows (items, deliveries, staging rows,
log entries and nodes, inbox numbers). Through `Session.execute(statement, rows)` SQLAlchemy
builds and processes a parameter set per row, and on SQLite, where a statement is a function
call, that work was ~18% of the broker's GIL-held time per submission (py-spy --gil,
bench/throughput.py). Here the statement is compiled once per shape and the rows go to the
driver's own executemany (through `exec_driver_sql`, so errors are still SQLAlchemy's and the
connection's outage handling still sees them). The rows hold plain str, int, bytes and None,
which the drivers take as they are.

PostgreSQL keeps SQLAlchemy's path, which for psycopg 3 is the driver's executemany in pipeline
mode (a Bind and an Execute per row, one round trip for all). Tried and dropped: multi-row
`INSERT ... VALUES (...), (...)` statements with positional parameters. psycopg parses a statement
longer than 4 KiB afresh on every execution (its query cache stops there), and a batch's statements
are much longer; `bench/throughput.py` on PostgreSQL with 2 brokers accepted 328 and 365/s with them
against 409 and 413/s without, run alternately.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

_compiled: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
_lock = threading.Lock()


def execute_many(
    session: Session, name: str, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Execute `statement` once per row of `rows`, in the session's transaction. `name` names
    the call site: a statement of one name must always have the same shape (every row the
    same keys)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "sqlite":
        session.execute(statement, rows)
        return
    keys = tuple(rows[0])
    shape = (dialect.name, name, keys)
    cached = _compiled.get(shape)
    if cached is None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if compiled.positiontup is None:  # pragma: no cover - SQLite's paramstyle is positional
            raise RuntimeError("expected a positional paramstyle")
        cached = (str(compiled), tuple(compiled.positiontup))
        with _lock:
            _compiled[shape] = cached
    sql, order = cached
    if len(order) == 1:
        (key,) = order
        params = [(row[key],) for row in rows]
    else:  # one C call per row (a generator of lookups per row was ~6% of a batch's GIL time)
        values = operator.itemgetter(*order)
        params = [values(row) for row in rows]
    connection.exec_driver_sql(sql, params)
