"""Gateway overhead, side by side in one run: direct to the emulator vs through the gateway.

Starts the provider emulator and the gateway (uvicorn, one process, a throwaway SQLite
database) as subprocesses on loopback, then sends the same OpenAI chat request
(a) straight to the emulator, (b) through the gateway with an explicit model (routing
bypassed), (c) through the gateway with `model: "auto"` (LLM sentinel on the emulator,
so two provider calls), at several concurrency levels. Prints p50/p99 latency, requests
per second, the latency the gateway adds over direct, and the gateway's CPU time per request.

    .venv/bin/python bench/bench_gateway.py [--requests 400] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(url: str, headers: dict, body: dict, n: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=60) as client:
        async def one() -> None:
            async with sem:
                t = time.perf_counter()
                r = await client.post(url, json=body, headers=headers)
                r.raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)

        for _ in range(min(20, n)):  # warm-up
            await one()
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(n)])
        elapsed = time.perf_counter() - start
    return latencies, elapsed


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    emu_port, gw_port = free_port(), free_port()
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "bench", "VAR_DIR": str(tmp), "SECURE_SSL_REDIRECT": "0",
           "EMULATOR_URL": f"http://127.0.0.1:{emu_port}", "LOG_LEVEL": "WARNING"}
    for key in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY",
                "GEMINI_API_KEY"):
        env.pop(key, None)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PY, "manage.py", "bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
    key = subprocess.run([PY, "manage.py", "create_api_key", "--name", "bench"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    emu = subprocess.Popen([PY, "-m", "routing.providers.emulator", "--port", str(emu_port), "--log-level",
                            "warning"], cwd=ROOT, env=env)
    gw = subprocess.Popen([PY, "-m", "uvicorn", "config.asgi:application", "--port", str(gw_port), "--no-access-log",
                           "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        wait_http(f"http://127.0.0.1:{emu_port}/_emulator/stats")
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 64}
        cases = [
            ("direct to emulator", f"http://127.0.0.1:{emu_port}/v1/chat/completions", {}, {**body, "model": "gpt-5.1"},
             None),
            ("gateway, explicit model", f"http://127.0.0.1:{gw_port}/v1/chat/completions",
             {"Authorization": f"Bearer {key}"}, {**body, "model": "gpt-5.1"}, gw.pid),
            ("gateway, auto (LLM sentinel)", f"http://127.0.0.1:{gw_port}/v1/chat/completions",
             {"Authorization": f"Bearer {key}"}, {**body, "model": "auto"}, gw.pid),
        ]
        print(f"{'case':32} {'conc':>5} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} "
              f"{'RPS':>8} {'gw CPU ms/req':>14}")
        for conc in levels:
            base = None
            for name, url, headers, payload, pid in cases:
                cpu0 = cpu_seconds(pid) if pid else 0.0
                lat, elapsed = asyncio.run(run(url, headers, payload, args.requests, conc))
                cpu = (cpu_seconds(pid) - cpu0) * 1000 / (args.requests + min(20, args.requests)) if pid else 0.0
                p50, p99 = pct(lat, 50), pct(lat, 99)
                if base is None:
                    base = (p50, p99)
                added = f"{p50 - base[0]:10.2f} {p99 - base[1]:10.2f}" if pid else f"{'-':>10} {'-':>10}"
                print(f"{name:32} {conc:5d} {p50:8.2f} {p99:8.2f} {added} {args.requests / elapsed:8.0f} "
                      f"{(f'{cpu:.2f}' if pid else '-'):>14}")
    finally:
        for proc in (gw, emu):
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
