"""Gateway overhead side by side: direct to the emulator, through our gateway, through the LiteLLM proxy.

One command, one run, every case against the same emulator (0 ms latency) and the same prompts:

  direct          POST /v1/chat/completions on the emulator (the baseline)
  gw explicit     our gateway, a catalog model name (routing bypassed)
  gw auto/local   our gateway, `model: "auto"` with the local sentinel (the policy's sentinel_mode)
  litellm         the LiteLLM proxy, a model name mapped to the emulator's OpenAI endpoint

at each concurrency level, non-streaming and streaming. Both gateways run under uvicorn with
the same number of worker processes, access logs off. Our gateway uses a throwaway PostgreSQL
database and writes its decision row per request (LiteLLM runs without a database, so it logs
nothing: the comparison favours it). The decision cache is off, so every routed request runs
the local sentinel. LiteLLM is installed on first use into var/bench/litellm-venv (pinned;
reused when present) and started offline: local cost map, no callbacks, no retries, no DB.

"added" is the case minus direct at the same concurrency, in the same run. CPU ms/req is the
user+sys CPU of the server's processes (all workers; not PostgreSQL's) during the measured
phase, divided by the requests. The load generator is a separate process (raw HTTP/1.1,
keep-alive, uvloop); its own CPU per request is printed beside the table.

    .venv/bin/python bench/bench_vs_litellm.py [--requests 500] [--concurrency 1,16,64] [--workers 1]
    .venv/bin/python bench/bench_vs_litellm.py --no-litellm --variant GATEWAY_GC_TUNING=0   # an A/B of a setting
    .venv/bin/python bench/bench_vs_litellm.py --no-litellm --tree /tmp/base   # of a code change (a git worktree)

`--rounds N` splits each case's requests into N rounds taken in turn across the cases (case A,
B, C, then A, B, C again …), so that a change in the machine's speed during the run (a shared VM)
falls on every case alike instead of on whichever ran at that moment; the warm-up runs once, before
the first round. The figures are over all rounds together.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    PY,
    ROOT,
    LoadResult,
    Server,
    flush_redis_db,
    free_port,
    gateway_env,
    log,
    peak_rss_mb,
    prepare_gateway_db,
    run_load,
    start_emulator,
    start_gateway,
    start_server,
)

# Newer releases (1.108+) pin litellm-proxy-extras builds that are not published on PyPI.
LITELLM_VERSION = "1.106.12"
LITELLM_VENV = ROOT / "var" / "bench" / "litellm-venv"
LITELLM_KEY = "sk-bench-master"
MODEL = "gpt-5.1"

PROMPTS = [
    "What is the capital of France?",
    "Translate 'good morning' into Spanish.",
    "Write a Python function that merges two sorted lists.",
    "How many days are there in a leap year?",
    "Summarise the plot of Hamlet in two sentences.",
    "Give me a SQL query that counts orders per customer.",
    "What is the boiling point of water in Fahrenheit?",
    "Suggest a name for a grey cat.",
]


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    pip = LITELLM_VENV / "bin" / "pip"
    if exe.exists():
        shown = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True).stdout
        if f"Version: {LITELLM_VERSION}" in shown:
            return exe
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV.relative_to(ROOT)} (one time)")
    LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
    if not pip.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run([str(pip), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return exe


def start_litellm(workdir: Path, *, emulator_port: int, workers: int) -> Server:
    exe = ensure_litellm()
    config = workdir / "litellm.yaml"
    config.write_text(f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{emulator_port}/v1
      api_key: dummy-emulated
      max_retries: 0
litellm_settings:
  num_retries: 0
  request_timeout: 120
  drop_params: true
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  master_key: {LITELLM_KEY}
  disable_spend_logs: true
  disable_error_logs: true
router_settings:
  num_retries: 0
""")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "WARNING",
                "LITELLM_MODE": "PRODUCTION", "OPENBLAS_NUM_THREADS": "1"})
    port = free_port()
    cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", str(workers), "--telemetry", "False"]
    return start_server("litellm", cmd, port=port, env=env, workdir=workdir, cwd=workdir,
                        health="/health/liveliness", timeout=180)


@dataclass
class Case:
    name: str
    server: Server
    model: str
    headers: dict[str, str]
    measure_cpu: bool = True


def bodies(model: str, stream: bool) -> list[dict]:
    out = []
    for prompt in PROMPTS:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
        if stream:
            body["stream"] = True
        out.append(body)
    return out


def fmt(value: float, width: int = 8, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="measured requests per case")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each gateway")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                        help="also run our gateway with this setting changed (its own process, the same database), "
                             "as extra cases in the same run: an A/B of a setting, e.g. GATEWAY_GC_TUNING=0")
    parser.add_argument("--tree", action="append", default=[], type=Path, metavar="PATH",
                        help="also run our gateway from this other checkout (e.g. `git worktree add /tmp/base HEAD~1`), "
                             "with this virtualenv and the same database: an A/B of a code change in one run")
    parser.add_argument("--no-litellm", action="store_true", help="our gateway only (an A/B run with --variant)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="split each case's requests into this many rounds, interleaved across the cases")
    parser.add_argument("--warmup", type=int, default=200,
                        help="requests sent to each case before it is measured (at least the concurrency)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12",
                        help="our gateway's cache and Celery broker (a dedicated index, flushed); 'none' for in-process")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/gateway_bench_gw",
                        help="throwaway database for our gateway (dropped and recreated); 'sqlite' for a file")
    args = parser.parse_args()
    for variant in args.variant:
        if "=" not in variant:
            parser.error(f"--variant takes KEY=VALUE, not {variant!r}")
    if not 1 <= args.rounds <= args.requests:
        parser.error("--rounds must be between 1 and --requests")
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = args.modes.split(",")

    redis_url = None if args.redis_url == "none" else args.redis_url
    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-litellm-"))
    servers: list[Server] = []
    try:
        log("starting the provider emulator")
        emu = start_emulator(workdir)
        servers.append(emu)
        log("preparing our gateway's database (migrate, default catalog, local sentinel policy, API key)")
        env = gateway_env(workdir, emulator_port=emu.port,
                          database_url=None if args.database_url == "sqlite" else args.database_url,
                          redis_url=redis_url, GATEWAY_DECISION_CACHE="0")
        flush_redis_db(redis_url)
        key = prepare_gateway_db(env, sentinel_mode="local")
        log(f"starting our gateway (uvicorn, {args.workers} worker(s))")
        gw = start_gateway(workdir, env, workers=args.workers)
        servers.append(gw)
        auth = {"Authorization": f"Bearer {key}"}
        cases = [
            Case("direct", emu, MODEL, {}, measure_cpu=False),
            Case("gw explicit", gw, MODEL, auth),
            Case("gw auto/local", gw, "auto", auth),
        ]
        for variant in args.variant:
            log(f"starting our gateway with {variant}")
            name, _, value = variant.partition("=")
            other = start_gateway(workdir, {**env, name: value}, workers=args.workers, name=f"gateway [{variant}]")
            servers.append(other)
            cases += [Case(f"gw explicit [{variant}]", other, MODEL, auth),
                      Case(f"gw auto/local [{variant}]", other, "auto", auth)]
        for tree in args.tree:
            label = tree.name
            log(f"starting our gateway from {tree}")
            other = start_gateway(workdir, env, workers=args.workers, tree=tree.resolve(), name=f"gateway-{label}")
            servers.append(other)
            cases += [Case(f"gw explicit [{label}]", other, MODEL, auth), Case(f"gw auto/local [{label}]", other, "auto", auth)]
        if not args.no_litellm:
            log(f"starting the LiteLLM proxy {LITELLM_VERSION} ({args.workers} worker(s))")
            ll = start_litellm(workdir, emulator_port=emu.port, workers=args.workers)
            servers.append(ll)
            cases.append(Case("litellm", ll, MODEL, {"Authorization": f"Bearer {LITELLM_KEY}"}))
        results: dict[tuple[str, str, int], LoadResult] = {}
        shares = [args.requests // args.rounds + (i < args.requests % args.rounds) for i in range(args.rounds)]
        for mode in modes:
            for conc in levels:
                for round_no, share in enumerate(shares):
                    for case in cases:
                        label = f" (round {round_no + 1}/{args.rounds})" if args.rounds > 1 else ""
                        log(f"{mode:6} c={conc:<3} {case.name}: {share} requests{label}")
                        part = run_load(
                            port=case.server.port, path="/v1/chat/completions",
                            bodies=bodies(case.model, mode == "stream"), headers=case.headers, requests=share,
                            concurrency=conc, warmup=max(conc, args.warmup) if round_no == 0 else conc,
                            cpu_pids=[case.server.proc.pid] if case.measure_cpu else [],
                        )
                        key = (mode, case.name, conc)
                        results[key] = part if key not in results else results[key].merged(part)
        rss = {s.name: peak_rss_mb(s.pids) for s in servers}
    finally:
        for server in reversed(servers):
            server.stop()
        flush_redis_db(redis_url)

    print(f"\n# bench_vs_litellm {time.strftime('%Y-%m-%d %H:%M')} requests/case={args.requests} rounds={args.rounds} "
          f"workers={args.workers} litellm={LITELLM_VERSION} gateway db={args.database_url.split('@')[-1]} "
          f"redis={redis_url or 'none (tasks in-process)'}")
    print("| mode | case | conc | p50 ms | p99 ms | added p50 | added p99 | first byte p50 | RPS | "
          "server CPU ms/req | loadgen CPU ms/req | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in modes:
        for conc in levels:
            base = results[(mode, "direct", conc)]
            for case in cases:
                r = results[(mode, case.name, conc)]
                added = ("–", "–") if case.name == "direct" else (
                    fmt(r.pct(50) - base.pct(50), 0), fmt(r.pct(99) - base.pct(99), 0))
                cpu = fmt(r.cpu_ms_per_request(), 0) if case.measure_cpu else "–"
                print(f"| {mode} | {case.name} | {conc} | {fmt(r.pct(50), 0)} | {fmt(r.pct(99), 0)} | {added[0]} | "
                      f"{added[1]} | {fmt(r.pct(50, first_byte=True), 0)} | {r.rps:.0f} | {cpu} | "
                      f"{r.loadgen_cpu_s * 1000 / r.requests:.2f} | {r.errors} |")
    print(f"\npeak RSS MB (all processes of each server): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    errors = {k: v.error_samples for k, v in results.items() if v.errors}
    if errors:
        print(f"errors: {errors}")

    # Goals (issue 7, 2-core machine), on the non-streaming runs when present.
    mode = "plain" if "plain" in modes else modes[0]
    print(f"\nGoals ({mode}):")
    if 1 in levels:
        base, local = results[(mode, "direct", 1)], results[(mode, "gw auto/local", 1)]
        p50, p99 = local.pct(50) - base.pct(50), local.pct(99) - base.pct(99)
        print(f"  added latency at c=1, local sentinel: p50 {p50:.2f} ms (goal ≤ 2) "
              f"{'MET' if p50 <= 2 else 'NOT MET'}; p99 {p99:.2f} ms (goal ≤ 5) {'MET' if p99 <= 5 else 'NOT MET'}")
        base, explicit = results[(mode, "direct", 1)], results[(mode, "gw explicit", 1)]
        p50, p99 = explicit.pct(50) - base.pct(50), explicit.pct(99) - base.pct(99)
        print(f"  added latency at c=1, explicit model: p50 {p50:.2f} ms, p99 {p99:.2f} ms (should be below the routed case)")
    top = max(levels)
    if not args.no_litellm:
        theirs = results[(mode, "litellm", top)]
        for name in ("gw auto/local", "gw explicit"):
            ours = results[(mode, name, top)]
            ratio = ours.rps / theirs.rps if theirs.rps else float("inf")
            print(f"  RPS at c={top}, {name}: ours {ours.rps:.0f} vs LiteLLM {theirs.rps:.0f} = {ratio:.2f}x "
                  f"(goal ≥ 5x) {'MET' if ratio >= 5 else 'NOT MET'}")
            cpu_ratio = ours.cpu_ms_per_request() / theirs.cpu_ms_per_request()
            print(f"  CPU per request at c={top}, {name}: ours {ours.cpu_ms_per_request():.2f} ms vs LiteLLM "
                  f"{theirs.cpu_ms_per_request():.2f} ms = {cpu_ratio:.2f} of LiteLLM's (goal ≤ 0.20) "
                  f"{'MET' if cpu_ratio <= 0.2 else 'NOT MET'}")
    print(f"  (logs in {workdir})")


if __name__ == "__main__":
    main()
