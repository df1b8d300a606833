"""Infrastructure faults: PostgreSQL, the broker and workers fail under a real gateway and worker.

The gateway and Celery workers run as subprocesses; PostgreSQL and Redis are reached through
`FaultProxy` (tests/faults/faultproxy.py), which refuses, drops and black-holes connections
while the test drives traffic. The machine's real servers are never stopped. Providers are
the emulator (in this process) reached by the official SDKs from the subprocesses.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.faults.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent.parent
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
BROKER_URL = os.environ.get("CELERY_BROKER_URL") or ""
HEALTH_BOUND_S = 2.5  # /healthz answers within its 2 s check timeout (plus the request itself)
JUDGE = "claude-sonnet-4-6"  # judge model in these tests: no route uses it, so its calls are told apart

needs_postgres = pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL faults need DATABASE_URL=postgres://…")
needs_redis_broker = pytest.mark.skipif(
    not (ON_POSTGRES and BROKER_URL.startswith("redis://")),
    reason="broker faults need CELERY_BROKER_URL=redis://… and PostgreSQL (shared with the worker)")

pytestmark = [pytest.mark.slow]

# A request waits at most ~4.5 s on a database that is down or hung (2 s connect timeout after a
# 2.5 s deadline on a stalled connection; docs/RELIABILITY.md); this adds the request's own time.
REQUEST_BOUND_S = 5.5
PROMPTS = ["What is the capital of Peru?", "Write a Python function to merge two sorted lists",
           "Explain why the sky is blue in two sentences", "Summarise the causes of the French revolution"]


# ---- helpers ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def database_url(host: str | None = None, port: int | None = None) -> str:
    """The test database for a subprocess: PostgreSQL (through `host:port`, a proxy, if given) or the SQLite file."""
    db = connection.settings_dict
    if not ON_POSTGRES:
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{host or db['HOST'] or '127.0.0.1'}:{port or db['PORT'] or 5432}/{db['NAME']}"


def base_env(tmp_path: Path, emu_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PYTEST_CURRENT_TEST")}
    env.update(SECRET_KEY="infra-faults", VAR_DIR=str(tmp_path / "var"), DECISION_SPOOL_DIR=str(tmp_path / "spool"),
               EMULATOR_URL=emu_url, ANTHROPIC_API_KEY="", OPENAI_API_KEY="", GEMINI_API_KEY="",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class LoggedProcess:
    """A subprocess whose output goes to a log file: read it, stop it (SIGTERM, then SIGKILL)."""

    log: Path
    proc: subprocess.Popen
    _fh: Any

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._fh.close()


class GatewayProcess(LoggedProcess):
    """`uvicorn config.asgi:application` in a subprocess, on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--lifespan", "off", "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> GatewayProcess:
        def up() -> bool:
            assert self.proc.poll() is None, f"gateway exited:\n{self.output()}"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code in (200, 503)
            except httpx.HTTPError:
                return False
        assert wait_until(up, timeout, 0.2), f"gateway did not start:\n{self.output()}"
        return self


@dataclass
class Result:
    started: float
    elapsed: float
    status: int
    request_id: str | None
    error: str = ""


class Load:
    """Closed-loop load: `workers` threads POST /api/v1/complete until stopped."""

    def __init__(self, url: str, key: str, workers: int = 6, timeout: float = 15.0) -> None:
        self.url, self.key, self.workers, self.timeout = url, key, workers, timeout
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers)
        self._futures: list[concurrent.futures.Future[None]] = []

    def _run(self, n: int) -> None:
        with httpx.Client(timeout=self.timeout, headers={"authorization": f"Bearer {self.key}"}) as client:
            i = 0
            while not self._stop.is_set():
                prompt = f"{PROMPTS[(n + i) % len(PROMPTS)]} ({n}-{i}-{uuid.uuid4().hex[:6]})"
                i += 1
                t0 = time.monotonic()
                try:
                    r = client.post(f"{self.url}/api/v1/complete", json={"message": prompt})
                    self.results.append(Result(t0, time.monotonic() - t0, r.status_code, r.headers.get("x-request-id")))
                except httpx.HTTPError as exc:
                    self.results.append(Result(t0, time.monotonic() - t0, 0, None, f"{type(exc).__name__}: {exc}"))
                    time.sleep(0.05)

    def start(self) -> Load:
        self._futures = [self._pool.submit(self._run, n) for n in range(self.workers)]
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=self.timeout + 5)
        self._pool.shutdown()
        return self.results


@pytest.fixture
def proxies() -> Iterator[list[FaultProxy]]:
    made: list[FaultProxy] = []
    yield made
    for proxy in made:
        proxy.stop()


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for proc in started:
        proc.terminate()  # all at once: each takes a moment to shut down
    for proc in started:
        proc.stop()


class WorkerProcess(LoggedProcess):
    """`celery -A config worker` (solo pool) on this test's own queue, in a subprocess."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._start = log.stat().st_size if log.exists() else 0
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"infra-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30) -> WorkerProcess:
        def ready() -> bool:
            assert self.proc.poll() is None, f"worker exited:\n{self.output()}"
            return " ready." in self.log.read_text(errors="replace")[self._start:]
        assert wait_until(ready, timeout, 0.2), f"worker did not start:\n{self.output()}"
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def timed_get(url: str) -> tuple[float, int, dict[str, Any]]:
    t0 = time.monotonic()
    r = httpx.get(url, timeout=10)
    return time.monotonic() - t0, r.status_code, r.json()


def summary(results: list[Result]) -> str:
    statuses: dict[int, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    elapsed = sorted(r.elapsed for r in results)
    return (f"{statuses}, p50 {elapsed[len(elapsed) // 2]:.3f}s, p99 {elapsed[int(len(elapsed) * 0.99)]:.3f}s, "
            f"max {elapsed[-1]:.3f}s")


def sample_every_request() -> None:
    from routing.models import PolicyStatus, PolicyVersion

    PolicyVersion.objects.filter(status=PolicyStatus.ACTIVE).update(judge_sample_rate=1)


def send(url: str, key: str, n: int) -> list[Result]:
    results = []
    with httpx.Client(timeout=15, headers={"authorization": f"Bearer {key}"}) as client:
        for i in range(n):
            t0 = time.monotonic()
            r = client.post(f"{url}/api/v1/complete", json={"message": f"{PROMPTS[i % len(PROMPTS)]} #{i} {uuid.uuid4()}"})
            results.append(Result(t0, time.monotonic() - t0, r.status_code, r.headers.get("x-request-id")))
    return results


# ---- 1. the fault proxy itself -------------------------------------------------------------------

class EchoServer:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    return sock.recv(65536)


def test_the_fault_proxy_passes_refuses_drops_blackholes_and_resumes():
    echo = EchoServer()
    with FaultProxy("127.0.0.1", echo.port) as proxy:
        a = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        assert roundtrip(a) == b"ping"

        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        assert roundtrip(a, b"still") == b"still"  # refusing leaves existing connections alone

        proxy.drop()
        a.settimeout(2)
        assert a.recv(10) == b"", "a dropped connection is closed"

        proxy.resume()
        b = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        assert roundtrip(b) == b"ping"

        proxy.blackhole()
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)  # accepted...
        c.settimeout(0.5)
        c.sendall(b"hello")
        with pytest.raises(TimeoutError):
            c.recv(10)  # ...and never answered
        b.settimeout(0.5)
        b.sendall(b"held")
        with pytest.raises(TimeoutError):
            b.recv(10)  # existing connections stall

        proxy.resume()
        b.settimeout(2)
        assert b.recv(10) == b"held", "a stalled connection's bytes are delivered on resume"
        c.settimeout(2)
        assert c.recv(10) == b"", "a black-holed connection is closed on resume"
        for sock in (a, b, c):
            sock.close()
    echo.sock.close()


# ---- 2. PostgreSQL down or hung under load -------------------------------------------------------

@needs_postgres
def test_requests_are_served_or_fail_fast_while_postgres_is_down_and_no_decision_row_is_lost(
        transactional_db, emu, catalog, api_key, tmp_path, proxies, processes):
    from routing.models import Decision
    from tests.faults.ledger import assert_ledger

    db = connection.settings_dict
    pg = FaultProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)).start()
    proxies.append(pg)
    gateway = GatewayProcess(base_env(tmp_path, emu.url, DATABASE_URL=database_url("127.0.0.1", pg.port),
                                      JUDGE_MODEL=JUDGE), tmp_path / "gateway.log").wait_ready()
    processes.append(gateway)
    send(gateway.url, api_key, 2)  # a warm process: its key and config are cached (a cold one answers 503)
    before = emu.stats()

    load = Load(gateway.url, api_key).start()
    time.sleep(1.5)
    pg.cut()  # PostgreSQL is down: connections refused, existing ones closed
    time.sleep(1)
    # A key this process never saw cannot be checked: a fast 503 that says when to retry.
    t0 = time.monotonic()
    unknown = httpx.post(f"{gateway.url}/api/v1/complete", json={"message": "hi"}, timeout=10,
                         headers={"authorization": f"Bearer rgw_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"})
    unknown_s = time.monotonic() - t0
    time.sleep(2.5)
    pg.resume()
    time.sleep(1.5)
    pg.blackhole()  # PostgreSQL hangs: existing connections stall, new ones are never answered
    time.sleep(1)
    health_s, health_status, health = timed_get(f"{gateway.url}/healthz")
    time.sleep(3)
    pg.resume()
    time.sleep(2)
    results = load.stop()
    print(f"\nPostgreSQL down then hung: {summary(results)}; /healthz while hung: {health_s:.2f}s {health}")

    assert health_status == 503 and health["database"].startswith("error"), health
    assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "database_unavailable", unknown.text
    assert unknown.headers["retry-after"] == "2" and unknown_s < REQUEST_BOUND_S
    assert health_s < HEALTH_BOUND_S, f"/healthz took {health_s:.2f}s with the database black-holed"
    ok = [r for r in results if r.status == 200]
    assert len(ok) > 20, summary(results)
    assert {r.status for r in results} <= {200, 503}, f"{summary(results)}\n{gateway.output()}"
    slow = [r for r in results if r.elapsed > REQUEST_BOUND_S]
    assert not slow, f"{len(slow)} requests took longer than {REQUEST_BOUND_S}s: {summary(results)}"

    # The running gateway replays its spool once PostgreSQL answers again: no restart needed.
    ids = [r.request_id for r in ok]
    spool = tmp_path / "spool"
    assert wait_until(lambda: Decision.objects.filter(request_id__in=ids).count() == len(ids), 20), (
        f"{len(ids) - Decision.objects.filter(request_id__in=ids).count()} rows missing; "
        f"spool: {sorted(p.name for p in spool.glob('*'))}\n{gateway.output()}")
    assert not list(spool.glob("decisions-*.jsonl")), "the spool was not drained"
    assert_ledger(ids, before, emu.stats(), exclude_models=[JUDGE])
    assert timed_get(f"{gateway.url}/healthz")[1] == 200


@pytest.mark.skipif(ON_POSTGRES, reason="the PostgreSQL pass cuts the real connection instead (test above)")
def test_rows_written_while_the_decision_table_is_away_are_spooled_and_replayed_by_the_running_gateway(
        transactional_db, emu, catalog, api_key, tmp_path, processes):
    """The SQLite version: the gateway subprocess's writes fail (the table is renamed away) under load."""
    from routing.models import Decision
    from tests.faults.ledger import assert_ledger

    gateway = GatewayProcess(base_env(tmp_path, emu.url, DATABASE_URL=database_url(),
                                      JUDGE_MODEL=JUDGE), tmp_path / "gateway.log").wait_ready()
    processes.append(gateway)
    before = emu.stats()
    load = Load(gateway.url, api_key, workers=4).start()
    time.sleep(1.5)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE routing_decision RENAME TO routing_decision_away")
    try:
        time.sleep(3)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE routing_decision_away RENAME TO routing_decision")
    time.sleep(1.5)
    results = load.stop()
    print(f"\ndecision table away: {summary(results)}")
    ok = [r for r in results if r.status == 200]
    assert len(ok) > 20 and len(ok) == len(results), summary(results)
    ids = [r.request_id for r in ok]
    assert wait_until(lambda: Decision.objects.filter(request_id__in=ids).count() == len(ids), 20), (
        f"{len(ids) - Decision.objects.filter(request_id__in=ids).count()} rows missing\n{gateway.output()}")
    assert "spooling" in gateway.log.read_text(), "the outage did not reach the writer"
    assert not list((tmp_path / "spool").glob("decisions-*.jsonl")), "the spool was not drained"
    assert_ledger(ids, before, emu.stats(), exclude_models=[JUDGE])


# ---- 3. the broker down: the response path never waits, the outbox drains ------------------------

@pytest.mark.skipif(not settings.CELERY_TASK_ALWAYS_EAGER, reason="the broker pass runs the real worker test below")
def test_with_the_broker_down_requests_are_not_slowed_and_the_stored_samples_drain_by_the_sweep(
        transactional_db, emu, catalog, api_key, tmp_path, proxies, processes):
    """No broker to restore in the embedded pass: the gateway's broker is a black hole throughout,
    and the sweep (in-process here) drains what was stored."""
    from audits.models import JudgeAudit, JudgeStatus
    from audits.sampling import outbox_requeue

    sample_every_request()
    broker = FaultProxy("127.0.0.1", free_port()).start()  # nothing behind it: only ever black-holes
    proxies.append(broker)
    broker.blackhole()
    gateway = GatewayProcess(base_env(tmp_path, emu.url, DATABASE_URL=database_url(),
                                      CELERY_BROKER_URL=f"redis://127.0.0.1:{broker.port}/0", JUDGE_MODEL=JUDGE),
                             tmp_path / "gateway.log").wait_ready()
    processes.append(gateway)
    health_s, health_status, health = timed_get(f"{gateway.url}/healthz")
    warm = send(gateway.url, api_key, 1)  # the first request loads the SDK clients
    results = send(gateway.url, api_key, 12)
    print(f"\nbroker black-holed: {summary(results)}; /healthz {health_s:.2f}s {health}")
    assert health_status == 503 and health["broker"].startswith("error") and health["database"] == "ok", health
    assert health_s < HEALTH_BOUND_S
    assert all(r.status == 200 for r in results) and max(r.elapsed for r in results) < 1.0, summary(results)

    ids = [r.request_id for r in warm + results]
    assert wait_until(lambda: JudgeAudit.objects.filter(request_id__in=ids).count() == len(ids), 20), (
        f"samples were not stored\n{gateway.output()}")
    assert not JudgeAudit.objects.filter(request_id__in=ids).exclude(status=JudgeStatus.PENDING).exists()
    assert emu.stats()["by_kind"]["judge"] == 0
    assert "left for the outbox sweep" in gateway.log.read_text()

    assert outbox_requeue(older_than_s=0)["judge"] == len(ids)
    scored = JudgeAudit.objects.filter(request_id__in=ids, status=JudgeStatus.SCORED, applied=True).count()
    assert scored == len(ids)
    assert outbox_requeue(older_than_s=0) == {"judge": 0, "shadow": 0, "applied": 0}, "the sweep is idempotent"
    assert emu.stats()["by_kind"]["judge"] == len(ids), "each audit was judged once"


@needs_redis_broker
def test_with_the_broker_down_requests_are_not_slowed_and_the_work_completes_once_it_is_back(
        transactional_db, emu, catalog, api_key, tmp_path, proxies, processes):
    from audits.models import JudgeAudit, JudgeStatus
    from audits.tasks import requeue_stale_work

    sample_every_request()
    queue_name = f"infra-{uuid.uuid4().hex[:8]}"
    host, port = BROKER_URL.split("//", 1)[1].split("/", 1)[0].split(":")
    broker = FaultProxy(host, int(port)).start()
    proxies.append(broker)
    proxied = BROKER_URL.replace(f"{host}:{port}", f"127.0.0.1:{broker.port}")
    env = base_env(tmp_path, emu.url, DATABASE_URL=database_url(),
                   CELERY_BROKER_URL=proxied, CELERY_TASK_DEFAULT_QUEUE=queue_name, JUDGE_MODEL=JUDGE)
    gateway = GatewayProcess(env, tmp_path / "gateway.log")
    processes.append(gateway)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    processes.append(worker)
    gateway.wait_ready()
    worker.wait_ready()

    def scored(ids: list[str | None]) -> int:
        return JudgeAudit.objects.filter(request_id__in=ids, status=JudgeStatus.SCORED, applied=True).count()

    baseline = send(gateway.url, api_key, 7)[1:]  # the first request loads the SDK clients
    assert wait_until(lambda: scored([r.request_id for r in baseline]) == 6, 30), worker.output()

    broker.hang()  # the broker hangs: connections dropped, new ones accepted and never answered
    health_s, health_status, health = timed_get(f"{gateway.url}/healthz")
    during = send(gateway.url, api_key, 12)
    print(f"\nbroker up: {summary(baseline)}; broker hung: {summary(during)}; /healthz {health_s:.2f}s {health}")
    assert health_status == 503 and health["broker"].startswith("error"), health
    assert health_s < HEALTH_BOUND_S
    assert all(r.status == 200 for r in during), summary(during)
    assert max(r.elapsed for r in during) < max(1.0, 3 * max(r.elapsed for r in baseline)), "the broker slowed requests"
    ids = [r.request_id for r in during]
    assert wait_until(lambda: JudgeAudit.objects.filter(request_id__in=ids).count() == len(ids), 30), (
        f"samples were not stored\n{gateway.output()}")
    time.sleep(1)
    assert scored(ids) == 0

    broker.resume()
    # Beat runs the sweep every minute; here it is sent once, straight away.
    requeue_stale_work.apply_async(kwargs={"older_than_s": 0}, queue=queue_name)
    assert wait_until(lambda: scored(ids) == len(ids), 45), (
        f"{scored(ids)}/{len(ids)} scored\n{worker.output()}\n{gateway.output()}")
    judged = emu.stats()["by_kind"]["judge"]
    assert judged == len(ids) + len(baseline) + 1, f"{judged} judge calls for {len(ids) + len(baseline) + 1} audits"


# ---- 4. a worker killed mid-task -----------------------------------------------------------------

@needs_redis_broker
def test_a_judge_task_whose_worker_is_killed_mid_call_completes_exactly_once_on_a_new_worker(
        transactional_db, emu, catalog, tmp_path, processes):
    from django.db.models import Sum

    from audits.models import JudgeAudit, JudgeStatus
    from audits.sampling import sample_store
    from audits.tasks import judge_audit
    from dashboard.models import RollupHour
    from routing.models import Decision
    from routing.services import decisions_insert
    from tests.test_decision_log import make_record

    record = make_record()
    decisions_insert(records=[record])
    assert sample_store(record=record, prompt="What is the capital of Peru?", answer="Lima.", probability=1.0)
    rid = str(record.request_id)
    queue_name = f"infra-{uuid.uuid4().hex[:8]}"
    visibility_s = 2
    env = base_env(tmp_path, emu.url, DATABASE_URL=database_url(),
                   CELERY_BROKER_URL=BROKER_URL, CELERY_TASK_DEFAULT_QUEUE=queue_name, JUDGE_MODEL=JUDGE,
                   CELERY_VISIBILITY_TIMEOUT_S=str(visibility_s))
    emu.set_faults({"fault": "hang", "kind": "judge", "times": 1})  # the first judge call never answers

    first = WorkerProcess(env, tmp_path / "worker.log")
    processes.append(first)
    first.wait_ready()
    judge_audit.apply_async(args=[rid], queue=queue_name)
    assert wait_until(lambda: emu.stats()["in_flight"] == 1 and emu.stats()["by_kind"]["judge"] == 1, 30), (
        first.output())
    first.kill()  # SIGKILL mid-call: the message is neither acknowledged nor rejected
    killed_at = time.monotonic()
    assert JudgeAudit.objects.get(request_id=rid).status == JudgeStatus.RUNNING

    # The broker hands an unacknowledged message to another worker once the visibility timeout
    # has passed; a worker restores such messages as it starts.
    time.sleep(max(0.0, visibility_s + 0.5 - (time.monotonic() - killed_at)))
    second = WorkerProcess(env, tmp_path / "worker.log")
    processes.append(second)
    second.wait_ready()
    assert wait_until(lambda: JudgeAudit.objects.filter(request_id=rid, status=JudgeStatus.SCORED,
                                                        applied=True).exists(), 30), second.output()

    judge_audit.apply_async(args=[rid], queue=queue_name)  # a duplicate delivery changes nothing
    time.sleep(1.5)
    audit = JudgeAudit.objects.get(request_id=rid)
    stats = emu.stats()
    assert stats["by_kind"]["judge"] == 2, "one judge call killed, one completed, none for the duplicate"
    assert sum(b["requests"] for m, b in stats["billed"].items() if m.startswith(audit.judge_model)) == 1, (
        f"the killed call is not billed, the completed one is: {stats['billed']}")
    assert audit.attempts == 2
    assert Decision.objects.get(request_id=rid).judge_score == audit.score
    assert RollupHour.objects.aggregate(n=Sum("judge_count"))["n"] == 1, "the judge score was counted once"
    assert "redelivered after a lost worker" in second.log.read_text()
