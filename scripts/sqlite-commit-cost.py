#!/usr/bin/env python3
"""What one publish costs SQLite itself, for the schemas the SQLite history has had.

    python3 scripts/sqlite-commit-cost.py

For each schema: the time of a one-row INSERT in a transaction of its own (WAL mode,
synchronous=NORMAL, as the store runs it, with the statement prepared anew each time as SQLiteNIO
does), and the pages that commit writes to the log. Uses Python's own SQLite (Debian 12: 3.40),
not the one SQLiteNIO builds in, so compare the lines with each other, not with the hub's figures.
The disk sync the store runs after each commit is not part of it.
"""

import os
import sqlite3
import tempfile
import time
import uuid

ROWS = 4000
COLUMNS = "id TEXT NOT NULL UNIQUE, topics TEXT NOT NULL, data TEXT NOT NULL, private INTEGER NOT NULL, " \
    "type TEXT, retry INTEGER, published_at REAL NOT NULL"

SCHEMAS = {
    "sequences by AUTOINCREMENT, RETURNING, index of publication times": dict(autoincrement=True, returning=True, index=True),
    "sequences numbered by the store, index of publication times": dict(autoincrement=False, returning=False, index=True),
    "sequences numbered by the store, no index of publication times": dict(autoincrement=False, returning=False, index=False),
}


def measure(folder, autoincrement, returning, index):
    path = os.path.join(folder, "history.db")
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.remove(name)
    db = sqlite3.connect(path, isolation_level=None, cached_statements=0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    key = "INTEGER PRIMARY KEY AUTOINCREMENT" if autoincrement else "INTEGER PRIMARY KEY"
    db.execute(f"CREATE TABLE updates (sequence {key}, {COLUMNS})")
    if index:
        db.execute("CREATE INDEX updates_published_at ON updates (published_at)")
    if returning:
        sql = "INSERT INTO updates (id, topics, data, private, type, retry, published_at) " \
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING sequence, id"
    else:
        sql = "INSERT INTO updates (sequence, id, topics, data, private, type, retry, published_at) " \
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

    def row(n):
        values = [str(uuid.uuid4()), '["https://example.com/books/1"]', '{"sent":1764547200000,"n":1}', 0,
                  None, None, time.time()]
        return values if returning else [n] + values

    # The time, with checkpoints as SQLite runs them (every 1 000 pages, in the commit that crosses the mark).
    start = time.perf_counter()
    for n in range(1, ROWS + 1):
        list(db.execute(sql, row(n)))
    per_commit = (time.perf_counter() - start) / ROWS * 1e6
    # The pages, with no checkpoint: the log's size after more commits.
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for n in range(ROWS + 1, 2 * ROWS + 1):
        list(db.execute(sql, row(n)))
    pages = os.path.getsize(path + "-wal") / (4096 + 24) / ROWS  # a frame: a page and its header
    db.close()
    return per_commit, pages


def main():
    with tempfile.TemporaryDirectory() as folder:
        print("| schema | µs per one-row commit (3 runs) | pages written to the log per commit |")
        print("|---|---|---:|")
        for name, schema in SCHEMAS.items():
            runs = [measure(folder, **schema) for _ in range(3)]
            times = ", ".join(f"{t:.0f}" for t, _ in runs)
            print(f"| {name} | {times} | {runs[-1][1]:.1f} |")


if __name__ == "__main__":
    main()
