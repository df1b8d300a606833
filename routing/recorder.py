"""The decision log writer: off the response path, in batches, never losing a row.

1. Request handlers call `record()`, which appends to an in-memory queue; on PostgreSQL it
   first encodes the row for COPY (tens of microseconds), so that a flush holds the
   interpreter lock only for its few statements: encoding a whole batch at flush time held it
   for milliseconds, and the requests being served meanwhile waited (the p99 at concurrency 1,
   docs/BENCHMARKS.md).
2. A background thread wakes every `DECISION_LOG_FLUSH_MS` (sooner when
   `DECISION_LOG_BATCH_SIZE` rows are waiting) and bulk-inserts what is pending, in batches of
   at most that size. Rows arriving do not wake it one at a time.
3. When the insert fails (database away, slow, locked), the batch is appended to a
   spool file (JSON lines, fsynced) and the thread goes on. For `DB_RETRY_S` after a
   failure, batches go straight to the spool: a hung database costs one connect timeout,
   not one per batch, and the queue never backs up in memory.
4. Each cycle, while the database answers, spool files are replayed oldest first;
   inserts skip request ids already stored, so a replay after a partial write is safe.
5. Every database call here runs under `db_deadline`: a connection that stops answering
   without closing (a hung server, a stalled proxy) is cut after `WRITE_DEADLINE_S`, so
   the writer never hangs; the batch is spooled (and, if the write did land, the replay
   skips it).
6. At exit the queue is flushed (to the database or, failing that, the spool). The writer's
   database connection is closed after `IDLE_CLOSE_S` without rows.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import close_old_connections, connections

from routing.engine.dispatch import DecisionRecord

log = logging.getLogger("routing.recorder")
_UNSET = object()

# After a failed write the database is left alone this long (batches go to the spool).
DB_RETRY_S = 2.0
# The longest a write or replay may take before its connection is cut. Above the statement
# timeout (3 s), which a live but slow server enforces itself; this catches silent connections.
WRITE_DEADLINE_S = 8.0
# The writer closes its database connection after this long without rows (by default).
IDLE_CLOSE_S = 5.0


@contextlib.contextmanager
def db_deadline(seconds: float, alias: str = "default", *, wrapper: Any = None) -> Iterator[None]:
    """Bound this thread's database calls: past `seconds`, the connection is cut from a timer.

    psycopg has no client-side query timeout, and `statement_timeout` needs a server that is
    alive and reachable. Cutting the socket makes the blocked call raise `OperationalError`
    (a call that completes in the instant the timer fires may fail spuriously: callers treat
    it as any database failure). `wrapper`: a connection not in `connections` (health check)."""
    done = threading.Event()
    # The timer runs in its own thread, where `connections[alias]` is another connection.
    wrapper = wrapper if wrapper is not None else connections[alias]
    timer = threading.Timer(seconds, lambda: _cut(wrapper, done))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        done.set()
        timer.cancel()


def _cut(wrapper: Any, done: threading.Event) -> None:
    if done.is_set():
        return
    raw = getattr(wrapper, "connection", None)
    fileno = getattr(raw, "fileno", None)
    if fileno is None:
        return  # not connected yet (connect_timeout bounds that) or SQLite (its busy timeout does)
    try:
        with socket.socket(fileno=os.dup(fileno())) as sock:
            log.warning("database call exceeded its deadline; cutting the connection")
            sock.shutdown(socket.SHUT_RDWR)  # the dup is closed; the shutdown reaches the shared socket
    except (OSError, ValueError, AttributeError):
        pass


def _encode(value: Any) -> Any:
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool {type(value).__name__}")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("sentinel_cost", "executor_cost", "cost", "baseline_cost"):
        row[key] = Decimal(row[key])
    row["request_id"] = uuid.UUID(row["request_id"])
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


class DecisionRecorder:
    def __init__(self, *, spool_dir: str | Path, batch_size: int = 500, flush_ms: int = 200,
                 idle_close_s: float = IDLE_CLOSE_S) -> None:
        self.spool_dir = Path(spool_dir)
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.idle_close_s = idle_close_s
        # (record, its COPY line or None): appended by `record()`, taken by the writer thread.
        self._pending: collections.deque[tuple[DecisionRecord, bytes | None]] = collections.deque()
        self._pending_lock = threading.Lock()  # `record()` vs the writer going idle (see `_run`)
        self._wake = threading.Event()  # a full batch, a flush() or close(): don't wait out the interval
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._encode: Any = _UNSET  # decision_row_encoder(), made on first use
        self._position = itertools.count()
        self.written = 0
        self.spooled = 0
        self.failures = 0
        self._db_retry_at = 0.0  # monotonic; before it, batches go straight to the spool

    # -- producer side (request handlers) --------------------------------------------------
    def record(self, record: DecisionRecord) -> None:
        from . import metrics

        metrics.observe(record)
        self._ensure_thread()
        with self._pending_lock:
            line = self._encoded(record)
            self._idle.clear()
            self._pending.append((record, line))
            full = len(self._pending) >= self.batch_size
        if full:
            self._wake.set()

    def _encoded(self, record: DecisionRecord) -> bytes | None:
        """`record`'s COPY line (PostgreSQL), made here, a few tens of microseconds a row, rather
        than the whole batch's in the writer thread: that held the interpreter lock for
        milliseconds at each flush, and the requests being served meanwhile waited. Its
        position (the staging table's ordering column) only has to grow. Called under
        `_pending_lock` (the encoder keeps a buffer)."""
        if self._encode is _UNSET:
            from .services import decision_row_encoder

            try:
                self._encode = decision_row_encoder()  # None unless PostgreSQL
            except Exception:  # noqa: BLE001 - each batch is encoded at flush instead
                log.warning("decision log: no COPY encoder; rows are encoded at flush", exc_info=True)
                self._encode = None
        if self._encode is None:
            return None
        try:
            return self._encode(record, next(self._position))
        except Exception:  # noqa: BLE001 - never fail the request: the insert encodes (and rejects) it
            log.warning("decision log: a row could not be encoded for COPY; its batch is encoded at flush",
                        exc_info=True)
            return None

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="decision-recorder", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    # -- consumer side ---------------------------------------------------------------------
    def _run(self) -> None:
        """Every `flush_s` (sooner when a batch is full, or on flush()/close()), take what is
        pending in batches and write them. The thread sleeps in between: rows arriving do not
        wake it one by one."""
        last_rows_at: float | None = None  # monotonic; None: no connection held since the last close
        while True:
            if not self._stopping and len(self._pending) < self.batch_size:
                self._wake.wait(self.flush_s)
            self._wake.clear()
            stop = self._stopping
            taken: list[tuple[DecisionRecord, bytes | None]] = []
            while self._pending and len(taken) < self.batch_size:
                taken.append(self._pending.popleft())
            if taken:
                lines = [line for _, line in taken]
                self._write([record for record, _ in taken],
                            None if any(line is None for line in lines) else b"".join(lines))  # type: ignore[arg-type]
            self._replay_spool()
            with self._pending_lock:
                idle = not self._pending
                if idle:
                    self._idle.set()
            now = time.monotonic()
            if taken:
                last_rows_at = now
            elif idle and last_rows_at is not None and now - last_rows_at >= self.idle_close_s:
                # No rows for a while: don't hold a database connection open. Not after every
                # batch that empties the queue: at a few requests a second that was a new
                # connection per batch (~20 ms of this process's CPU each, under the GIL).
                connections.close_all()
                last_rows_at = None
            if stop and idle:
                connections.close_all()
                return

    def _write(self, batch: list[DecisionRecord], staged: bytes | None = None) -> None:
        from .services import decisions_insert

        if time.monotonic() < self._db_retry_at:
            self._spool(batch)  # the database failed a moment ago: don't wait on it again yet
            return
        try:
            close_old_connections()
            with db_deadline(WRITE_DEADLINE_S):
                decisions_insert(records=batch, staged=staged)
            self.written += len(batch)
        except Exception as exc:  # noqa: BLE001 - any database failure spools the batch
            self.failures += 1
            first = time.monotonic() >= self._db_retry_at + DB_RETRY_S  # not failing a moment ago
            log.warning("decision log: database write failed (%s: %s); spooling %d rows", type(exc).__name__,
                        str(exc).strip()[:200], len(batch), exc_info=first)
            self._db_retry_at = time.monotonic() + DB_RETRY_S
            self._spool(batch)
            connections.close_all()

    def _spool(self, batch: list[DecisionRecord]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        name = f"decisions-{time.time_ns()}-{os.getpid()}-{threading.get_ident()}.jsonl"
        # Written under a temporary name and renamed once synced: another process (a second web
        # process, the replay task) replaying this directory never reads a half-written file.
        partial = self.spool_dir / f".{name}.partial"
        with open(partial, "w", encoding="utf-8") as fh:
            for record in batch:
                fh.write(json.dumps(asdict(record), default=_encode) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(partial, self.spool_dir / name)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.spool_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.spooled += len(batch)

    def spool_files(self) -> list[Path]:
        if not self.spool_dir.exists():
            return []
        return sorted(self.spool_dir.glob("decisions-*.jsonl"))

    def _replay_spool(self) -> None:
        if time.monotonic() < self._db_retry_at:
            return
        for path in self.spool_files():
            if not replay_spool_file(path):
                self._db_retry_at = time.monotonic() + DB_RETRY_S
                return

    # -- control ---------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is written or spooled (tests, shutdown)."""
        if self._thread is None:
            return True
        self._wake.set()
        return self._idle.wait(timeout)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=15)


def replay_spool_file(path: Path) -> bool:
    """Insert a spool file's rows and delete it; False when the database is still away."""
    from .services import decisions_insert

    try:
        rows = [_decode(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        log.error("decision log: unreadable spool file %s (%s); moved aside", path, exc)
        path.rename(path.with_suffix(".bad"))
        return True
    try:
        close_old_connections()
        with db_deadline(WRITE_DEADLINE_S):
            decisions_insert(records=rows)
    except Exception:  # noqa: BLE001 - still down; try again later
        connections.close_all()
        return False
    path.unlink(missing_ok=True)
    log.info("decision log: replayed %d spooled rows from %s", len(rows), path.name)
    return True
