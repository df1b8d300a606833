"""Decision-log ingestion into PostgreSQL: sustained rows/s through the real writer path, with baselines.

Rows are `DecisionRecord`s as the gateway produces them (5 applications, the 7 default routes,
confidences, tokens, Decimal costs, a decision JSON, an attempt log), created over the last two
hours as live traffic is, all built before timing starts. Each phase starts from empty decision
and rollup tables in its own database (`gateway_bench_ingest`, dropped and recreated):

  recorder     the real path: DecisionRecorder (its thread, batches of DECISION_LOG_BATCH_SIZE)
               → routing.services.decisions_insert: COPY into a temporary staging table,
               INSERT … ON CONFLICT DO NOTHING RETURNING id, the hour and day rollups in SQL
  insert       decisions_insert called directly in batches (no thread, no queue)
  orm          baseline, the previous path (still the one on SQLite): the ORM branch of
               decisions_insert (`_decisions_insert_orm`: Python rollups + bulk_create) on PostgreSQL
  bulk_create  baseline: the same rows as Decision objects, bulk_create(ignore_conflicts) only,
               no rollups, no replay check
  copy         baseline: psycopg COPY of the same rows, one COPY per batch, no rollups

"sustained" is the rate over the whole phase; "worst 5 s" the slowest five-second window
(recorder phase: sampled from its `written` counter). Goal (issue 7): ≥ 10,000 rows/s sustained.

    .venv/bin/python bench/bench_ingest.py [--rows 200000] [--batch N] [--phases recorder,insert,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import log, recreate_postgres_db  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/gateway_bench_ingest"
# route → (executor model, provider, share)
ROUTES = {
    "simple_qa": ("claude-haiku-4-5", "anthropic", 0.46),
    "complex_reasoning": ("claude-opus-4-7", "anthropic", 0.14),
    "code_generation": ("gpt-5.1-codex", "openai", 0.18),
    "long_context_research": ("gemini-3.1-pro-preview", "gemini", 0.07),
    "agentic_task": ("claude-opus-4-7", "anthropic", 0.05),
    "refusal_required": ("guardrail", "guardrail", 0.04),
    "fallback": ("gpt-5.1", "openai", 0.06),
}
ALL_PHASES = ("recorder", "insert", "orm", "bulk_create", "copy")


def setup_django(url: str, workdir: Path) -> None:
    os.environ.update({"DATABASE_URL": url, "DEBUG": "0", "SECRET_KEY": "bench", "VAR_DIR": str(workdir),
                       "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"})
    for key in ("REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(key, None)
    import django

    django.setup()


def make_records(n: int, apps: list[int], policy_id: int, seed: int = 7) -> list[Any]:
    from django.utils import timezone

    from routing.engine.dispatch import DecisionRecord

    rng = random.Random(seed)
    names, weights = list(ROUTES), [v[2] for v in ROUTES.values()]
    now = timezone.now()
    out = []
    for i in range(n):
        route = rng.choices(names, weights)[0]
        model, provider, _ = ROUTES[route]
        conf = round(rng.betavariate(8, 2), 4)
        tin, tout = rng.randint(20, 4000), rng.randint(10, 1500)
        cost = Decimal(tin * 10 + tout * 50) / Decimal(10**7)
        decision = {"route": route, "confidence": conf, "reasoning_depth": "shallow", "tools_required": [],
                    "estimated_output_tokens": tout, "route_override_attempted": False}
        exe_ms, sen_ms = rng.uniform(200, 4000), rng.uniform(0.3, 3)
        out.append(DecisionRecord(
            request_id=uuid.uuid4(), created_at=now - timedelta(seconds=7200 * (n - i) / n),
            application_id=apps[i % len(apps)], api_key_prefix="rgw_bench", endpoint="chat_completions",
            policy_version_id=policy_id, sentinel_kind="local", sentinel_model="local-sentinel-v1",
            sentinel_decision=decision, sentinel_error="", route_decided=route, confidence=conf, route=route,
            policy_reason="decided", escalated=False, executor_provider=provider, executor_model=model,
            executor_model_version=f"{model}-20260101", sentinel_input_tokens=0, sentinel_output_tokens=0,
            sentinel_cached_tokens=0, executor_input_tokens=tin, executor_output_tokens=tout,
            executor_cached_tokens=0, executor_cache_write_tokens=0, sentinel_ms=sen_ms, executor_ms=exe_ms,
            overhead_ms=1.5, total_ms=exe_ms + sen_ms + 1.5, sentinel_cost=Decimal(0), executor_cost=cost,
            cost=cost, baseline_cost=cost * 5, status="ok" if rng.random() > 0.01 else "error", error="",
            stream=rng.random() < 0.3, attempts=1, simulated=False, metadata={"user": f"u{i % 97}"},
            local_decision={"route": route, "confidence": conf}, retries=0,
            attempt_log=[{"target": model, "outcome": "ok", "ms": round(exe_ms, 1)}],
        ))
    return out


def reset_tables() -> None:
    from django.db import connection

    from dashboard.models import RollupDay, RollupHour
    from routing.models import Decision

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Decision._meta.db_table}, {RollupHour._meta.db_table}, "
                       f"{RollupDay._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {Decision._meta.db_table}")


def batches(records: list[Any], size: int):
    for start in range(0, len(records), size):
        yield records[start:start + size]


class Meter:
    """Rows done over time: overall rate and the slowest window of `window` seconds."""

    window = 5.0

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.marks: list[tuple[float, int]] = [(0.0, 0)]

    def mark(self, done: int) -> None:
        self.marks.append((time.perf_counter() - self.start, done))

    def summary(self, total: int) -> tuple[float, float, float]:
        elapsed = self.marks[-1][0]
        worst = float("inf")
        j = 0
        for i in range(len(self.marks)):
            while j < len(self.marks) and self.marks[j][0] - self.marks[i][0] < self.window:
                j += 1
            if j == len(self.marks):
                break
            t, d = self.marks[j][0] - self.marks[i][0], self.marks[j][1] - self.marks[i][1]
            worst = min(worst, d / t)
        return elapsed, total / elapsed, worst if worst != float("inf") else total / elapsed


def phase_recorder(records: list[Any], batch: int, workdir: Path) -> Meter:
    from django.conf import settings

    from routing.recorder import DecisionRecorder

    recorder = DecisionRecorder(spool_dir=workdir / "spool", batch_size=batch,
                                flush_ms=settings.DECISION_LOG_FLUSH_MS)
    meter = Meter()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            meter.mark(recorder.written)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for record in records:
        recorder.record(record)
    if not recorder.flush(timeout=3600):
        raise RuntimeError("the recorder did not drain")
    stop.set()
    sampler.join()
    meter.mark(recorder.written)
    recorder.close()
    if recorder.spooled or recorder.failures:
        raise RuntimeError(f"the recorder spooled {recorder.spooled} rows ({recorder.failures} failures)")
    return meter


def phase_insert(records: list[Any], batch: int, workdir: Path) -> Meter:
    from routing.services import decisions_insert

    meter, done = Meter(), 0
    for chunk in batches(records, batch):
        done += decisions_insert(records=chunk)
        meter.mark(done)
    return meter


def phase_orm(records: list[Any], batch: int, workdir: Path) -> Meter:
    from routing.services import _decisions_insert_orm

    meter, done = Meter(), 0
    for chunk in batches(records, batch):
        done += _decisions_insert_orm(chunk)
        meter.mark(done)
    return meter


def phase_bulk_create(records: list[Any], batch: int, workdir: Path) -> Meter:
    from django.db import transaction

    from routing.models import Decision

    meter, done = Meter(), 0
    for chunk in batches(records, batch):
        rows = [Decision(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)}) for r in chunk]
        with transaction.atomic():
            Decision.objects.bulk_create(rows, ignore_conflicts=True)
        done += len(rows)
        meter.mark(done)
    return meter


def _copy_columns() -> tuple[list[str], list[Any]]:
    from routing.engine.dispatch import DecisionRecord
    from routing.models import Decision

    names = [f.name for f in dataclasses.fields(DecisionRecord)]
    fields = [Decision._meta.get_field(n) for n in names]
    return names, fields


def _copy_rows(chunk: list[Any], names: list[str], json_names: set[str]):
    from psycopg.types.json import Jsonb

    for r in chunk:
        yield [Jsonb(getattr(r, n)) if n in json_names and getattr(r, n) is not None else getattr(r, n)
               for n in names]


def phase_copy(records: list[Any], batch: int, workdir: Path) -> Meter:
    from django.db import connection

    from routing.models import Decision

    names, fields = _copy_columns()
    json_names = {f.name for f in fields if f.get_internal_type() == "JSONField"}
    columns = ", ".join(f.column for f in fields)
    connection.ensure_connection()
    raw = connection.connection
    meter, done = Meter(), 0
    for chunk in batches(records, batch):
        with raw.transaction(), raw.cursor() as cursor:
            with cursor.copy(f"COPY {Decision._meta.db_table} ({columns}) FROM STDIN") as copy:
                for row in _copy_rows(chunk, names, json_names):
                    copy.write_row(row)
        done += len(chunk)
        meter.mark(done)
    return meter


PHASES = {"recorder": phase_recorder, "insert": phase_insert, "orm": phase_orm, "bulk_create": phase_bulk_create,
          "copy": phase_copy}


def check_rollups(expected_rows: int) -> str:
    """Rollups must hold exactly the stored rows: request counts and cost sums, hours and days."""
    from django.db.models import Count, Sum

    from dashboard.models import RollupDay, RollupHour
    from routing.models import Decision

    raw = Decision.objects.aggregate(n=Count("id"), cost=Sum("cost"))
    hours = RollupHour.objects.aggregate(n=Sum("requests"), cost=Sum("cost"), cells=Count("id"))
    days = RollupDay.objects.aggregate(n=Sum("requests"), cost=Sum("cost"))
    if not hours["n"]:
        return f"{raw['n']} rows, no rollups" + ("" if raw["n"] == expected_rows else " MISSING ROWS")
    ok = raw["n"] == expected_rows == hours["n"] == days["n"] and raw["cost"] == hours["cost"] == days["cost"]
    return f"{raw['n']} rows, {hours['cells']} hour cells, " + ("rollups exact" if ok else "ROLLUPS DIFFER")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=None, help="rows per insert (default: DECISION_LOG_BATCH_SIZE)")
    parser.add_argument("--phases", default=",".join(ALL_PHASES))
    parser.add_argument("--database-url", default=DEFAULT_URL, help="throwaway database (dropped and recreated)")
    args = parser.parse_args()
    phases = args.phases.split(",")

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    log(f"recreating {args.database_url.rsplit('/', 1)[1]} and migrating")
    recreate_postgres_db(args.database_url)
    setup_django(args.database_url, workdir)
    from django.conf import settings
    from django.core.management import call_command

    batch = args.batch or settings.DECISION_LOG_BATCH_SIZE
    call_command("migrate", verbosity=0)
    call_command("bootstrap", stdout=open(os.devnull, "w"))
    from routing.models import Application, PolicyVersion

    apps = [Application.objects.get_or_create(name=f"bench-app-{i}")[0].pk for i in range(5)]
    policy = PolicyVersion.objects.get(status="active").pk
    log(f"building {args.rows:,} decision records")
    records = make_records(args.rows, apps, policy)

    results = []
    for name in phases:
        reset_tables()
        log(f"{name}: {args.rows:,} rows in batches of {batch}")
        cpu0 = time.process_time()
        meter = PHASES[name](records, batch, workdir)
        cpu = time.process_time() - cpu0
        elapsed, rate, worst = meter.summary(args.rows)
        check = check_rollups(args.rows)
        log(f"{name}: {rate:,.0f} rows/s ({check})")
        results.append((name, elapsed, rate, worst, cpu * 1e6 / args.rows, check))

    print(f"\n# bench_ingest {time.strftime('%Y-%m-%d %H:%M')} rows={args.rows:,} batch={batch} "
          f"db={args.database_url.split('@')[-1]}")
    print("| phase | seconds | sustained rows/s | worst 5 s rows/s | client CPU µs/row | check |")
    print("|---|---:|---:|---:|---:|---|")
    for name, elapsed, rate, worst, cpu_us, check in results:
        print(f"| {name} | {elapsed:.1f} | {rate:,.0f} | {worst:,.0f} | {cpu_us:.0f} | {check} |")
    by_name = {r[0]: r for r in results}
    if "recorder" in by_name:
        rate = by_name["recorder"][2]
        print(f"\nGoal: ≥ 10,000 rows/s sustained through the real writer path: {rate:,.0f} rows/s "
              f"{'MET' if rate >= 10_000 else 'NOT MET'}")


if __name__ == "__main__":
    main()
