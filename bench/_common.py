"""Shared pieces of the HTTP benchmarks: processes on loopback, their CPU and memory, a cheap load generator.

Servers are subprocesses; their CPU time is read from /proc (user + sys of the process and every
descendant, so uvicorn's `--workers` children count), and peak memory from VmHWM. The load
generator runs in its own process (`run_load`), speaks raw HTTP/1.1 with keep-alive over asyncio
streams (uvloop when installed), and reads the servers' CPU itself right around the measured
phase, so warm-up requests are not counted. Its own CPU is reported too, so one can see that it
does not dominate the machine.

    python bench/_common.py loadgen < spec.json   # what `run_load` starts; prints a JSON result
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """One progress line per phase, to stderr, so tables on stdout stay clean."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urlopen(url, timeout=1):
                return
        except URLError as exc:
            if getattr(exc, "code", None):  # an HTTP error status: the server is up
                return
            time.sleep(0.2)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


# ---- /proc ---------------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (uvicorn/gunicorn workers, multiprocessing helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """user + sys CPU seconds of these processes (exited ones count as 0: read them while alive)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def peak_rss_mb(pids: list[int]) -> float:
    """Sum of VmHWM (peak resident set) over these processes, in MB."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


# ---- processes -----------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn and its workers shut down cleanly on SIGINT
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(name: str, cmd: list[str], *, port: int, env: dict[str, str], workdir: Path, cwd: Path = ROOT,
                 health: str = "/", timeout: float = 90) -> Server:
    log_path = workdir / f"{name}.log"
    fh = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, proc, port, log_path)
    try:
        wait_http(f"http://127.0.0.1:{port}{health}", timeout=timeout, proc=proc)
    except RuntimeError:
        server.stop()
        sys.stderr.write(log_path.read_text(errors="replace")[-3000:])
        raise
    return server


def start_emulator(workdir: Path, *, latency_ms: float = 0.0, port: int | None = None) -> Server:
    port = port or free_port()
    return start_server(
        "emulator",
        [PY, "-m", "routing.providers.emulator", "--port", str(port), "--latency-ms", str(latency_ms),
         "--log-level", "warning"],
        port=port, env=dict(os.environ), workdir=workdir, health="/_emulator/health",
    )


def gateway_env(workdir: Path, *, emulator_port: int, database_url: str | None, redis_url: str | None = None,
                **extra: str) -> dict[str, str]:
    """The gateway's environment: production-like (DEBUG off), providers on the emulator.

    With `redis_url` it is the production shape: Redis as the shared cache and as the Celery
    broker (sampled judge audits are queued for a worker instead of running in the web process;
    no worker consumes them here). Without it, the embedded defaults (tasks in-process)."""
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "bench", "VAR_DIR": str(workdir), "SECURE_SSL_REDIRECT": "0",
           "EMULATOR_URL": f"http://127.0.0.1:{emulator_port}", "LOG_LEVEL": "WARNING",
           "OPENBLAS_NUM_THREADS": "1"}
    for key in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY",
                "GEMINI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "GEMINI_BASE_URL"):
        env.pop(key, None)
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = env["CELERY_BROKER_URL"] = redis_url
    env.update(extra)
    return env


def flush_redis_db(url: str | None) -> None:
    """Empty the benchmark's own Redis database (a dedicated index, never the application's)."""
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()


def recreate_postgres_db(url: str) -> None:
    """Drop and create the database named in `url` (a throwaway benchmark database)."""
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def prepare_gateway_db(env: dict[str, str], *, sentinel_mode: str = "local") -> str:
    """Migrate, load the default catalog and policy, set the sentinel mode; returns a fresh API key."""
    if env.get("DATABASE_URL", "").startswith("postgres"):
        recreate_postgres_db(env["DATABASE_URL"])
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PY, "manage.py", "bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
    # A benchmark database only: switch the active policy's sentinel in place (production goes
    # through a reviewed proposal).
    subprocess.run([PY, "manage.py", "shell", "-v0", "-c",
                    "from routing.models import PolicyVersion as P; "
                    f"P.objects.filter(status='active').update(sentinel_mode={sentinel_mode!r})"],
                   cwd=ROOT, env=env, check=True)
    out = subprocess.run([PY, "manage.py", "create_api_key", "--name", "bench"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def start_gateway(workdir: Path, env: dict[str, str], *, workers: int = 1, extra_args: list[str] | None = None,
                  port: int | None = None, tree: Path = ROOT, name: str = "gateway") -> Server:
    """Our gateway under uvicorn; `tree`: another checkout of it (e.g. a git worktree of an earlier
    commit, for an A/B of a code change), run with this checkout's virtualenv."""
    port = port or free_port()
    cmd = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning", *(extra_args or [])]
    return start_server(name, cmd, port=port, env=env, workdir=workdir, health="/healthz", cwd=tree)


# ---- load generator ------------------------------------------------------------------------------

@dataclass
class LoadResult:
    latencies_ms: list[float]
    first_byte_ms: list[float]
    errors: int
    error_samples: list[str]
    elapsed_s: float
    server_cpu_s: float
    loadgen_cpu_s: float
    requests: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def pct(self, q: float, *, first_byte: bool = False) -> float:
        values = self.first_byte_ms if first_byte else self.latencies_ms
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]

    def merged(self, other: LoadResult) -> LoadResult:
        """This run and `other` (of the same case) as one: samples pooled, times and counts summed."""
        return LoadResult(
            latencies_ms=self.latencies_ms + other.latencies_ms, first_byte_ms=self.first_byte_ms + other.first_byte_ms,
            errors=self.errors + other.errors, error_samples=(self.error_samples + other.error_samples)[:10],
            elapsed_s=self.elapsed_s + other.elapsed_s, server_cpu_s=self.server_cpu_s + other.server_cpu_s,
            loadgen_cpu_s=self.loadgen_cpu_s + other.loadgen_cpu_s, requests=self.requests + other.requests,
            extra={**self.extra, **other.extra},
        )

    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1000 / self.requests if self.requests else float("nan")


def run_load(*, port: int, path: str, bodies: list[dict], headers: dict[str, str] | None = None, requests: int,
             concurrency: int, warmup: int | None = None, cpu_pids: list[int] | None = None,
             settle_s: float = 0.3, timeout_s: float = 120) -> LoadResult:
    """Run the load generator in its own process and return what it measured."""
    spec = {"port": port, "path": path, "bodies": bodies, "headers": headers or {}, "requests": requests,
            "concurrency": concurrency, "warmup": concurrency if warmup is None else warmup,
            "cpu_pids": cpu_pids or [], "settle_s": settle_s, "timeout_s": timeout_s}
    proc = subprocess.run([PY, str(Path(__file__)), "loadgen"], input=json.dumps(spec), capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout)
    return LoadResult(**data)


class _Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, payload: bytes) -> tuple[int, float, float]:
        """Send one request; (status, seconds to the first body byte, seconds to the end)."""
        await self.ensure()
        assert self.reader is not None and self.writer is not None
        t0 = time.perf_counter()
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = None, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        first = None
        if length is not None:
            if length:
                await self.reader.readexactly(length)
            first = time.perf_counter()
        elif chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")  # no trailers from any server here
                    break
                await self.reader.readexactly(size + 2)
                if first is None:
                    first = time.perf_counter()
        else:
            await self.reader.read()
            close = True
        end = time.perf_counter()
        if close:
            self.close()
        return status, (first or end) - t0, end - t0


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    port, concurrency = spec["port"], spec["concurrency"]
    extra_headers = "".join(f"{k}: {v}\r\n" for k, v in spec["headers"].items())
    payloads = []
    for body in spec["bodies"]:
        raw = json.dumps(body).encode()
        payloads.append(
            (f"POST {spec['path']} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
             f"Accept: */*\r\nContent-Length: {len(raw)}\r\n{extra_headers}\r\n").encode() + raw
        )
    conns = [_Conn(port) for _ in range(concurrency)]
    latencies: list[float] = []
    first_bytes: list[float] = []
    errors: list[str] = []
    counter = 0

    async def worker(conn: _Conn, total: int, record: bool) -> None:
        nonlocal counter
        while counter < total:
            index = counter
            counter += 1
            try:
                status, first, end = await asyncio.wait_for(conn.request(payloads[index % len(payloads)]),
                                                            spec["timeout_s"])
            except Exception as exc:  # noqa: BLE001 - every failure is counted and sampled
                conn.close()
                if record:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if status != 200:
                if record:
                    errors.append(f"HTTP {status}")
                continue
            if record:
                latencies.append(end * 1000)
                first_bytes.append(first * 1000)

    if spec["warmup"]:
        await asyncio.gather(*(worker(c, spec["warmup"], False) for c in conns))
    counter = 0
    pids = [p for root in spec["cpu_pids"] for p in tree_pids(root)]
    cpu0, own0 = cpu_seconds(pids), os.times()
    start = time.perf_counter()
    await asyncio.gather(*(worker(c, spec["requests"], True) for c in conns))
    elapsed = time.perf_counter() - start
    own1 = os.times()
    await asyncio.sleep(spec["settle_s"])  # let background work of the last requests (log writes) land
    cpu1 = cpu_seconds(pids)
    for conn in conns:
        conn.close()
    return {"latencies_ms": latencies, "first_byte_ms": first_bytes, "errors": len(errors),
            "error_samples": sorted(set(errors))[:5], "elapsed_s": elapsed, "server_cpu_s": cpu1 - cpu0,
            "loadgen_cpu_s": (own1.user - own0.user) + (own1.system - own0.system), "requests": spec["requests"]}


def _main() -> None:
    if sys.argv[1:] != ["loadgen"]:
        raise SystemExit(__doc__)
    spec = json.load(sys.stdin)
    try:
        import uvloop
    except ImportError:
        print(json.dumps(asyncio.run(_loadgen(spec))))
    else:
        print(json.dumps(uvloop.run(_loadgen(spec))))


if __name__ == "__main__":
    _main()
