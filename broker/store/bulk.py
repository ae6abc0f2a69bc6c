"""Many rows, one statement, without SQLAlchemy's per-row work: the submit path's bulk writes.

A batch of 50 submissions to 11 recipients writes ~1,400 rows (items, deliveries, staging rows,
log entries and nodes, inbox numbers). Through `Session.execute(statement, rows)` SQLAlchemy
builds and processes a parameter set per row, and on SQLite, where a statement is a function
call, that work was ~18% of the broker's GIL-held time per submission (py-spy --gil,
bench/throughput.py). Here the statement is compiled once per shape and the rows go to the
driver's own executemany (through `exec_driver_sql`, so errors are still SQLAlchemy's and the
connection's outage handling still sees them). The rows hold plain str, int, bytes and None,
which the drivers take as they are.

PostgreSQL: an INSERT goes as ONE statement of constant text, each column one array that the
server unnests (`_insert_unnest`): one Bind and one Execute for the whole batch, a statement
psycopg prepares once, and no per-row parameter work in SQLAlchemy, whose executemany for
psycopg 3 builds multi-row VALUES statements (long, so parsed afresh each time; the rows
processed one by one). bench/store.py, a batch's store CPU in the broker per item, run
alternately: deliveries alone as arrays 0.89 / 0.93 / 0.95 ms, every insert but the items'
0.71 / 0.80 / 0.68 ms. The items stay on SQLAlchemy's path (`arrays=False`): a bytea array
travels as hex text, and with ~23 KB envelopes that cost more (1.28 / 1.08 / 1.27 ms). Other
statements (updates) keep SQLAlchemy's path too. Tried and dropped earlier: multi-row
`INSERT ... VALUES (...), (...)` statements with positional parameters (psycopg parses a
statement longer than 4 KiB afresh on every execution; bench/throughput.py on PostgreSQL with 2
brokers accepted 328 and 365/s with them against 409 and 413/s without, run alternately).
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, UpdateBase

_compiled: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
_lock = threading.Lock()


def execute_many(
    session: Session,
    name: str,
    statement: UpdateBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    arrays: bool = True,
) -> None:
    """Execute `statement` once per row of `rows`, in the session's transaction. `name` names
    the call site: a statement of one name must always have the same shape (every row the
    same keys). `arrays=False`: an INSERT on PostgreSQL goes through SQLAlchemy's executemany,
    not as arrays (for rows with large byte strings, which an array carries as hex text)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "sqlite":
        if arrays and isinstance(statement, Insert) and dialect.name == "postgresql":
            _insert_unnest(connection, name, statement, rows)
        else:
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


def _insert_unnest(
    connection: Connection, name: str, statement: Insert, rows: Sequence[Mapping[str, Any]]
) -> None:
    """PostgreSQL: every row in ONE statement of constant text, each column sent as one array
    and unnested by the server (`INSERT INTO t (a, b) SELECT * FROM unnest(CAST(%(a)s AS
    type[]), CAST(%(b)s AS type[]))`): one Bind and one Execute whatever the number of rows,
    a statement psycopg prepares once, and no per-row parameter processing in SQLAlchemy (whose
    executemany of a batch's ~550 deliveries built multi-row VALUES statements: half of a
    batch's store CPU in the broker, bench/store.py)."""
    keys = tuple(rows[0])
    shape = ("postgresql", name, keys)
    cached = _compiled.get(shape)
    if cached is None:
        table = statement.table
        if not isinstance(table, Table):  # pragma: no cover - every bulk insert names its table
            raise TypeError(f"{name}: a bulk insert needs a table, not {table!r}")
        cached = (insert_unnest_sql(connection, table, keys), keys)
        with _lock:
            _compiled[shape] = cached
    sql, order = cached
    connection.exec_driver_sql(sql, {key: [row[key] for row in rows] for key in order})


def unnest_arrays(connection: Connection, table: Table, keys: Sequence[str], prefix: str = "") -> str:
    """`CAST(%(<prefix><key>)s AS <type>[]), ...`: each of `table`'s columns `keys` bound as one
    array (PostgreSQL), for `unnest(...)`."""
    dialect = connection.dialect
    return ", ".join(
        f"CAST(%({prefix}{key})s AS {table.c[key].type.compile(dialect=dialect)}[])" for key in keys
    )


def insert_unnest_sql(connection: Connection, table: Table, keys: Sequence[str], prefix: str = "") -> str:
    """`INSERT INTO table (keys) SELECT * FROM unnest(<arrays>)` (PostgreSQL): as many rows as
    the arrays bound to `<prefix><key>` hold, in one statement of constant text."""
    quote = connection.dialect.identifier_preparer.quote
    # identifiers: the table's own columns (table.c[key] in unnest_arrays), quoted; values: bound
    return (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(k) for k in keys)})"  # noqa: S608
        f" SELECT * FROM unnest({unnest_arrays(connection, table, keys, prefix)})"
    )
