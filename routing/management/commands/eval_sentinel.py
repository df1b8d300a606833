"""manage.py eval_sentinel --dataset FILE.jsonl [--sentinel local|tiered|anthropic|openai|gemini]
[--json] [--max-error 0.03] — score a sentinel on a labelled file; exit 1 when it misroutes too often.

The catalog and policy come from the database; an empty (or unmigrated) database falls
back to the default catalog YAML and the documented default policy, without writing
anything. LLM sentinels go through the runtime's provider configs (the emulator at
EMULATOR_URL when no API key is set).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from routing.engine.catalog import Catalog, PolicySettings, Price, RouteSpec
from routing.engine.local_sentinel.gate import format_gate, run_gate
from routing.engine.sentinel import (
    LLMSentinel,
    SentinelResult,
    local_result,
    shared_local_model,
)
from routing.providers.base import Message

SENTINEL_MODELS = {  # provider -> (catalog model, model version) when the policy names another provider
    "anthropic": ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    "openai": ("gpt-5.4-nano", "gpt-5.4-nano"),
    "gemini": ("gemini-3.1-flash-lite-preview", "gemini-3.1-flash-lite-preview"),
}


def catalog_and_policy() -> tuple[Catalog, PolicySettings, str]:
    from routing import selectors
    from routing.models import Route

    try:
        if Route.objects.exists():
            return selectors.catalog_snapshot(), selectors.active_policy(), "database"
    except DatabaseError:
        pass
    from routing.catalog_io import DEFAULT_CATALOG, load_catalog_file

    doc = load_catalog_file(DEFAULT_CATALOG)
    prices = {p["model"]: Price(p["model"], p["input_per_mtok"], p["output_per_mtok"], p["cached_input_per_mtok"],
                                p["cache_write_per_mtok"]) for p in doc.prices}
    routes = {r["name"]: RouteSpec(r["name"], r["description"], r["provider"], r["model"], r["model_version"],
                                   r["max_output_tokens"], r["tools_enabled"], r["fallback"], r["cheap_tier"])
              for r in doc.routes if r["enabled"]}
    catalog = Catalog(routes=routes, prices=prices, baseline_model=doc.baseline_model,
                      tools=tuple(t["name"] for t in doc.tools), models={p["model"]: p["provider"] for p in doc.prices})
    return catalog, PolicySettings(version_id=None, number=0), f"default catalog {DEFAULT_CATALOG.name}"


class Command(BaseCommand):
    help = "Evaluate a sentinel on a labelled JSONL file (prompt, route); non-zero exit above --max-error."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", type=Path, required=True)
        parser.add_argument("--sentinel", choices=["local", "tiered", "anthropic", "openai", "gemini"],
                            default="local")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--max-error", type=float, default=0.03, help="largest misclassification rate allowed")
        parser.add_argument("--concurrency", type=int, default=8, help="LLM sentinel calls in flight")

    def handle(self, *args, **o):
        path: Path = o["dataset"]
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        catalog, policy, source = catalog_and_policy()
        kind = o["sentinel"]
        if kind in SENTINEL_MODELS and policy.sentinel_provider != kind:
            model, version = SENTINEL_MODELS[kind]
            policy = dataclasses.replace(policy, sentinel_provider=kind, sentinel_model=model,
                                         sentinel_model_version=version)
        self.stderr.write(f"eval_sentinel: {len(rows)} rows from {path}, sentinel {kind}, {source}")
        report = asyncio.run(self._run(rows, kind, catalog, policy, o["concurrency"]))
        report.update({"dataset": str(path), "sentinel": kind, "max_error": o["max_error"]})
        if o["json"]:
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        else:
            self.stdout.write(format_gate(report))
        if report["misclassification"] > o["max_error"]:
            raise CommandError(f"misclassification {report['misclassification']:.4f} exceeds --max-error "
                               f"{o['max_error']:.4f}")
        if report["n"] == 0:
            raise CommandError("no usable rows in the dataset")

    async def _run(self, rows, kind, catalog, policy, concurrency):
        from routing.providers.registry import build_provider
        from routing.runtime import provider_configs

        local = shared_local_model()
        model = await local.aget() if kind in ("local", "tiered") else None
        providers = {}
        if kind != "local":
            name = policy.sentinel_provider
            providers[name] = build_provider(name, provider_configs()[name])

        async def ask_llm(prompt: str) -> SentinelResult:
            return await LLMSentinel(providers[policy.sentinel_provider]).decide(
                [Message(role="user", content=prompt)], catalog=catalog, policy=policy)

        async def decide(prompt: str) -> SentinelResult:
            if kind == "local":
                return local_result(model, prompt)
            if kind == "tiered":
                result = local_result(model, prompt)
                if result.decision.confidence >= policy.local_threshold:
                    result.kind = "tiered-local"
                    return result
                llm = await ask_llm(prompt)
                llm.kind = "tiered-llm"
                return llm
            return await ask_llm(prompt)

        every = max(1, len(rows) // 20)

        def progress(done: int, total: int) -> None:
            if done % every == 0 or done == total:
                sys.stderr.write(f"\r  {done}/{total} decided")
                if done == total:
                    sys.stderr.write("\n")
                sys.stderr.flush()

        try:
            return await run_gate(rows, decide, catalog=catalog, policy=policy, concurrency=concurrency,
                                  progress=progress)
        finally:
            for provider in providers.values():
                await provider.aclose()
