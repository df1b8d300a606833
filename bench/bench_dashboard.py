"""Dashboard server time at scale: N decisions in PostgreSQL, rollups built, every page timed.

1. Create (if needed) and migrate a separate benchmark database (never the main one).
2. Empty the decision and rollup tables, then COPY N synthetic decisions (psycopg COPY) spread
   over the last --days days: 5 applications, the 7 default routes with a realistic mix,
   confidences, token counts, exact Decimal costs at catalog prices, latencies, feedback on
   ~30 % and judge scores on ~2 %.
3. Build the rollups from the raw rows (`rollups_rebuild_all`: hour by hour, then days), timed.
4. Time each page through the Django test client as a finance user (server time: URL
   resolution, auth, queries, charts, template), --repeats times after one warm-up, and print
   p50/p99 per page as a Markdown table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway_bench \\
        .venv/bin/python bench/bench_dashboard.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/gateway_bench"
# route → (model, provider, share of traffic, input $/Mtok, output $/Mtok, cached $/Mtok)
ROUTES = {
    "simple_qa": ("claude-haiku-4-5", "anthropic", 0.46, 1.00, 5.00, 0.10),
    "complex_reasoning": ("claude-opus-4-7", "anthropic", 0.14, 5.00, 25.00, 0.50),
    "code_generation": ("gpt-5.1-codex", "openai", 0.18, 1.25, 10.00, 0.125),
    "long_context_research": ("gemini-3.1-pro-preview", "gemini", 0.07, 2.00, 12.00, 0.20),
    "agentic_task": ("claude-opus-4-7", "anthropic", 0.05, 5.00, 25.00, 0.50),
    "refusal_required": ("guardrail", "guardrail", 0.04, 0.0, 0.0, 0.0),
    "fallback": ("gpt-5.1", "openai", 0.06, 1.25, 10.00, 0.125),
}
BASELINE = (5.00, 25.00, 0.50)  # claude-opus-4-7
SENTINEL = (1.00, 5.00)  # claude-haiku-4-5
UNIT = 10**10  # costs are computed in 1e-10 dollars, exactly


def money(units: int) -> str:
    return f"{units // UNIT}.{units % UNIT:010d}"


def per_token(price_per_mtok: float) -> int:
    return round(price_per_mtok * 10_000)  # $/Mtok → 1e-10 $ per token


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def _text(value) -> str:
    """A Python value as COPY text."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if hasattr(value, "obj"):  # psycopg Jsonb, from JSONField.get_db_prep_value
        import json

        return json.dumps(value.obj)
    return str(value)


def _chunk(rng, n: int, now_us: int, span_us: int, apps: list[int], names: list[str], fixed: dict[str, str]) -> bytes:
    """n rows of COPY text, generated column by column with numpy (a row at a time is ~10x slower)."""
    import numpy as np

    route_names = list(ROUTES)
    r = rng.choice(len(route_names), size=n, p=[ROUTES[x][2] for x in route_names])
    route = np.array(route_names, dtype=object)[r]
    model = np.array([ROUTES[x][0] for x in route_names], dtype=object)[r]
    provider = np.array([ROUTES[x][1] for x in route_names], dtype=object)[r]
    p_in, p_out, p_cached = (np.array([per_token(ROUTES[x][i]) for x in route_names], dtype=np.int64)[r]
                             for i in (3, 4, 5))
    tokens_in = rng.lognormal(6.2, 0.9, n).astype(np.int64)
    cached = tokens_in * rng.choice([0, 0, 0, 20, 50], size=n) // 100
    tokens_out = rng.lognormal(5.5, 0.8, n).astype(np.int64)
    sent_in = 250 + tokens_in // 3
    sent_out = rng.integers(30, 91, n)
    b_in, b_out, b_cached = (per_token(p) for p in BASELINE)
    s_in, s_out = (per_token(p) for p in SENTINEL)
    executor = (tokens_in - cached) * p_in + cached * p_cached + tokens_out * p_out
    sentinel = sent_in * s_in + sent_out * s_out
    baseline = (tokens_in - cached) * b_in + cached * b_cached + tokens_out * b_out
    s_ms, e_ms, o_ms = rng.lognormal(5.6, 0.4, n), rng.lognormal(7.2, 0.7, n), rng.lognormal(1.2, 0.6, n)
    u = rng.random(n)
    fb = np.where(u < 0.3, rng.choice([4, 5, 5, 4, 3, 1], size=n), 0)
    judge = np.where(u > 0.98, rng.choice([5, 4, 4, 2], size=n), 0)
    created = (np.int64(now_us) - (rng.random(n) * span_us).astype(np.int64)).astype("datetime64[us]")
    ids = rng.bytes(16 * n).hex()

    def money_col(units) -> list[str]:
        return [f"{v // UNIT}.{v % UNIT:010d}" for v in units.tolist()]

    def fmt(values, spec: str) -> list[str]:
        return [format(v, spec) for v in values.tolist()]

    columns = {
        "request_id": [ids[i * 32:(i + 1) * 32] for i in range(n)],
        "created_at": [t + "+00" for t in np.datetime_as_string(created, unit="us").tolist()],
        "application": [str(a) for a in rng.choice(apps, size=n, p=[0.4, 0.25, 0.15, 0.12, 0.08]).tolist()],
        "api_key_prefix": "bench", "endpoint": "complete", "sentinel_kind": "llm", "sentinel_model": "claude-haiku-4-5",
        "route_decided": route.tolist(), "confidence": fmt(rng.beta(6, 1.6, n), ".4f"), "route": route.tolist(),
        "policy_reason": "", "escalated": "f", "executor_provider": provider.tolist(),
        "executor_model": model.tolist(), "executor_model_version": model.tolist(),
        "sentinel_input_tokens": fmt(sent_in, "d"), "sentinel_output_tokens": fmt(sent_out, "d"),
        "sentinel_cached_tokens": "0", "executor_input_tokens": fmt(tokens_in, "d"),
        "executor_output_tokens": fmt(tokens_out, "d"), "executor_cached_tokens": fmt(cached, "d"),
        "executor_cache_write_tokens": "0", "sentinel_ms": fmt(s_ms, ".3f"), "executor_ms": fmt(e_ms, ".3f"),
        "overhead_ms": fmt(o_ms, ".3f"), "total_ms": fmt(s_ms + e_ms + o_ms, ".3f"),
        "feedback_score": [str(v) if v else "\\N" for v in fb.tolist()],
        "judge_score": [str(v) if v else "\\N" for v in judge.tolist()],
        "sentinel_cost": money_col(sentinel), "executor_cost": money_col(executor),
        "cost": money_col(sentinel + executor), "baseline_cost": money_col(baseline),
        "status": ["ok" if v > 0.01 else "error" for v in rng.random(n).tolist()], "simulated": "f",
        "cache_hit": ["t" if v < 0.1 else "f" for v in rng.random(n).tolist()],
    }
    ordered = []
    for name in names:
        value = columns.get(name, fixed.get(name))
        ordered.append([value] * n if isinstance(value, str) else value)
    return ("\n".join("\t".join(row) for row in zip(*ordered, strict=True)) + "\n").encode()


def load(rows: int, days: int, seed: int) -> float:
    """COPY `rows` decisions; returns seconds. Columns not generated take the model's default."""
    import numpy as np
    from django.db import connection
    from django.utils import timezone

    from dashboard.models import RollupDay, RollupHour
    from routing.models import Application, Decision

    rng = np.random.default_rng(seed)
    apps = [Application.objects.get_or_create(name=f"bench-app-{i}")[0].pk for i in range(5)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Decision._meta.db_table}, {RollupHour._meta.db_table}, {RollupDay._meta.db_table}")
    fields = [f for f in Decision._meta.concrete_fields if f.name != "id"]
    fixed = {f.name: _text(None if f.null and not f.has_default() else f.get_db_prep_value(f.get_default(), connection))
             for f in fields}
    names = [f.name for f in fields]
    columns = ", ".join(f.column for f in fields)
    now_us = int(timezone.now().timestamp() * 1_000_000)
    span_us = days * 86_400 * 1_000_000
    started = time.monotonic()
    done = 0
    table = Decision._meta.db_table
    with connection.cursor() as cursor:
        # Bulk-load practice: secondary indexes are rebuilt after the COPY, and foreign-key
        # triggers are off for this session (the rows reference applications created above).
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                       "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)", [table, table])
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SET session_replication_role = replica")
    raw = connection.connection  # the psycopg connection behind Django's
    with raw.cursor() as cursor, cursor.copy(f"COPY {Decision._meta.db_table} ({columns}) FROM STDIN") as copy:
        while done < rows:
            n = min(100_000, rows - done)
            copy.write(_chunk(rng, n, now_us, span_us, apps, names, fixed))
            done += n
            if done % 1_000_000 == 0:
                print(f"  copied {done:,} rows ({done / (time.monotonic() - started):,.0f}/s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = DEFAULT")
        for _, definition in indexes:
            cursor.execute(definition)
        cursor.execute(f"ANALYZE {table}")
    raw.commit()
    return time.monotonic() - started


def time_pages(repeats: int) -> list[tuple[str, float, float, int]]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.utils import timezone

    user, _ = get_user_model().objects.get_or_create(username="bench-finance")
    user.groups.add(Group.objects.get_or_create(name="finance")[0])
    client = Client()
    client.force_login(user)
    today = timezone.now().date()
    month = f"start={today - timedelta(days=29)}&end={today}"
    day = f"start={today - timedelta(days=1)}&end={today - timedelta(days=1)}"
    pages = [
        ("overview, 30 days", f"/?{month}"),
        ("cost, 30 days", f"/dashboard/cost/?{month}"),
        ("quality, 30 days", f"/dashboard/quality/?{month}"),
        ("latency, 30 days", f"/dashboard/latency/?{month}"),
        ("routing mix, 30 days", f"/dashboard/mix/?{month}"),
        ("calculator (30-day defaults)", "/dashboard/calculator/"),
        ("overview, 1 day (hourly)", f"/?{day}"),
        ("latency, 1 day (hourly)", f"/dashboard/latency/?{day}"),
        ("cost, 30 days, one route", f"/dashboard/cost/?{month}&route=simple_qa"),
        ("CSV: spend by route", f"/dashboard/cost/?{month}&csv=spend_by_route"),
    ]
    results = []
    for name, url in pages:
        response = client.get(url)  # warm-up
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        results.append((name, statistics.median(times), p99, len(response.content)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--skip-load", action="store_true", help="reuse the rows and rollups already loaded")
    args = parser.parse_args()

    url = os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        raise SystemExit("bench_dashboard needs PostgreSQL (DATABASE_URL=postgres://…)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only")
    os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parents[1] / "var" / "bench"))
    ensure_database(url)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.SECURE_SSL_REDIRECT = False
    call_command("migrate", verbosity=0)
    call_command("bootstrap", verbosity=0)
    from dashboard.models import RollupDay, RollupHour
    from dashboard.services import rollups_rebuild_all
    from routing.models import Decision

    if not args.skip_load:
        print(f"Loading {args.rows:,} decisions over {args.days} days…", flush=True)
        seconds = load(args.rows, args.days, args.seed)
        print(f"  COPY: {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)")
        t0 = time.monotonic()
        rollups_rebuild_all()
        print(f"  rollups built in {time.monotonic() - t0:.1f} s: "
              f"{RollupHour.objects.count():,} hour cells, {RollupDay.objects.count():,} day cells")
    print(f"Decisions: {Decision.objects.count():,}; timing pages ({args.repeats} requests each)…", flush=True)
    rows = time_pages(args.repeats)
    print("\n| page | p50 (ms) | p99 (ms) | response bytes |\n|---|---:|---:|---:|")
    for name, p50, p99, size in rows:
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {size:,} |")


if __name__ == "__main__":
    main()
