"""Concurrency: 1,000 simultaneous requests through the gateway against a provider that takes 2 s.

Goal (issue 7): they all complete in under 3 s with no errors. The emulator answers every
completion after `--latency-ms` (2,000); 1,000 clients each open a connection and send one
request at the same moment (the load generator is a separate process; connecting is inside
the measured time). Cases, in one run:

  direct          straight to the emulator: the floor (latency + the emulator's own work)
  gw explicit     our gateway, a catalog model name (routing bypassed)
  gw auto/local   our gateway, `model: "auto"`, local sentinel (one provider call per request)

Reported: wall time for all 1,000, errors, latency p50/p99/max, the most requests the
emulator had in flight at once (so a limit inside the gateway shows), the gateway's CPU
seconds over the burst and its peak RSS (VmHWM of every process). The gateway runs as in
bench_vs_litellm.py (PostgreSQL, Redis, decision cache off); uvicorn flags are given with
`--uvicorn-args`.

    .venv/bin/python bench/bench_concurrency.py [--requests 1000] [--latency-ms 2000] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path
from urllib.request import Request, urlopen

from _common import (
    LoadResult,
    Server,
    flush_redis_db,
    gateway_env,
    log,
    peak_rss_mb,
    prepare_gateway_db,
    run_load,
    start_emulator,
    start_gateway,
)

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that merges two sorted lists.",
    "Summarise the plot of Hamlet in two sentences.",
    "Suggest a name for a grey cat.",
]


def emulator_call(port: int, path: str, method: str = "GET") -> dict:
    req = Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"{}" if method == "POST" else None)
    with urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--goal-s", type=float, default=3.0)
    parser.add_argument("--uvicorn-args", default="--backlog 4096", help="extra uvicorn flags for the gateway")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gateway_bench_conc")
    args = parser.parse_args()
    redis_url = None if args.redis_url == "none" else args.redis_url

    workdir = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    servers: list[Server] = []
    rows: list[tuple[str, LoadResult, int, float]] = []
    try:
        log(f"starting the provider emulator ({args.latency_ms:.0f} ms per completion)")
        emu = start_emulator(workdir, latency_ms=args.latency_ms)
        servers.append(emu)
        log("preparing the gateway's database")
        env = gateway_env(workdir, emulator_port=emu.port, database_url=args.database_url, redis_url=redis_url,
                          GATEWAY_DECISION_CACHE="0")
        flush_redis_db(redis_url)
        key = prepare_gateway_db(env, sentinel_mode="local")
        log(f"starting the gateway ({args.workers} worker(s), uvicorn {args.uvicorn_args})")
        gw = start_gateway(workdir, env, workers=args.workers, extra_args=shlex.split(args.uvicorn_args))
        servers.append(gw)
        auth = {"Authorization": f"Bearer {key}"}
        cases = [("direct", emu, "gpt-5.1", {}), ("gw explicit", gw, "gpt-5.1", auth), ("gw auto/local", gw, "auto", auth)]
        for name, server, model, headers in cases:
            bodies = [{"model": model, "messages": [{"role": "user", "content": p}], "max_tokens": 64} for p in PROMPTS]
            log(f"{name}: warm-up (64 requests, 64 at a time)")
            run_load(port=server.port, path="/v1/chat/completions", bodies=bodies, headers=headers, requests=64,
                     concurrency=64, warmup=0)
            emulator_call(emu.port, "/_emulator/reset", "POST")
            log(f"{name}: {args.requests} simultaneous requests")
            result = run_load(port=server.port, path="/v1/chat/completions", bodies=bodies, headers=headers,
                              requests=args.requests, concurrency=args.requests, warmup=0,
                              cpu_pids=[] if server is emu else [gw.proc.pid], timeout_s=60)
            stats = emulator_call(emu.port, "/_emulator/stats")
            rows.append((name, result, stats["max_in_flight"], peak_rss_mb(server.pids)))
    finally:
        for server in reversed(servers):
            server.stop()
        flush_redis_db(redis_url)

    print(f"\n# bench_concurrency {time.strftime('%Y-%m-%d %H:%M')} requests={args.requests} "
          f"provider latency={args.latency_ms:.0f} ms workers={args.workers} uvicorn: {args.uvicorn_args}")
    print("| case | wall s | errors | p50 ms | p99 ms | max ms | max in flight at provider | server CPU s | "
          "peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r, in_flight, rss in rows:
        cpu = f"{r.server_cpu_s:.2f}" if name != "direct" else "–"
        print(f"| {name} | {r.elapsed_s:.2f} | {r.errors} | {r.pct(50):.0f} | {r.pct(99):.0f} | "
              f"{max(r.latencies_ms, default=float('nan')):.0f} | {in_flight} | {cpu} | {rss:.0f} |")
    for name, r, _, _ in rows:
        if r.errors:
            print(f"  {name} errors: {r.error_samples}")
    print(f"\nGoal: {args.requests} simultaneous requests in < {args.goal_s:.1f} s with no errors")
    for name, r, _, _ in rows[1:]:
        met = r.elapsed_s < args.goal_s and r.errors == 0
        print(f"  {name}: {r.elapsed_s:.2f} s, {r.errors} errors: {'MET' if met else 'NOT MET'}")
    print(f"  (logs in {workdir})")


if __name__ == "__main__":
    main()
