"""End-to-end latency of the plain, speculative and chained execution modes, in one run.

Runs `Gateway.route` + `Gateway.execute` in process against the provider emulator with a
fixed latency per provider call (default 300 ms), for simple prompts (the sentinel picks
the cheap route) and hard ones (it does not), sequentially so that times do not overlap.
The decision cache is off, so every request pays for its sentinel.

    python bench/bench_modes.py [--latency-ms 300] [--n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("VAR_DIR", "/tmp/bench-modes-var")

SIMPLE = ["What is the capital of {c}?", "Who wrote {c}'s national anthem?", "How many people live in {c}?",
          "What currency does {c} use?"]
HARD = [("Prove rigorously that the economy of {c} cannot grow forever under fixed resources; analyse the "
         "trade-offs step by step."),
        "Design the architecture of a national payments system for {c} and evaluate its failure modes in depth."]
COUNTRIES = ["France", "Peru", "Kenya", "Japan", "Chile", "Norway", "Egypt", "India", "Ghana", "Spain"]


async def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.conf import settings

    from routing.engine.dispatch import Gateway, GatewayRequest
    from routing.engine.policy import ModeSettings
    from routing.management.commands.eval_sentinel import catalog_and_policy
    from routing.providers.base import Message
    from routing.providers.emulator.testing import EmulatorServer
    from routing.providers.registry import build_provider

    emulator = EmulatorServer(latency_ms=args.latency_ms).start()
    settings.EMULATOR_URL = emulator.url
    settings.ANTHROPIC_API_KEY = settings.OPENAI_API_KEY = settings.GEMINI_API_KEY = None
    from routing.runtime import provider_configs

    providers = {name: build_provider(name, cfg) for name, cfg in provider_configs().items()}
    catalog, policy, _ = await asyncio.to_thread(catalog_and_policy)
    policy = dataclasses.replace(policy, sentinel_mode="llm")
    modes = {
        "plain": ModeSettings(cache_enabled=False),
        "speculative": ModeSettings(cache_enabled=False, speculative=True),
        "chained": ModeSettings(cache_enabled=False, chained=True),
    }
    print(f"emulator latency {args.latency_ms:.0f} ms per call, {args.n} requests per cell, sequential")
    print(f"{'mode':<12} {'prompts':<7} {'p50 ms':>8} {'mean ms':>8} {'calls/req':>9} {'cost/req $':>12} "
          f"{'waste/req $':>12}  served paths")
    for kind, templates in (("simple", SIMPLE), ("hard", HARD)):
        prompts = [templates[i % len(templates)].format(c=COUNTRIES[i % len(COUNTRIES)]) for i in range(args.n)]
        for name, mode in modes.items():
            gateway = Gateway(catalog=catalog, policy=policy, providers=providers, now=lambda: datetime.now(UTC),
                              modes=mode)
            emulator.reset()
            emulator.configure(latency_ms=args.latency_ms)
            times, costs, waste, paths = [], Decimal(0), Decimal(0), {}
            for prompt in prompts:
                request = GatewayRequest(messages=[Message("user", prompt)], endpoint="complete")
                started = time.perf_counter()
                routed = await gateway.route(request)
                executed = await gateway.execute(routed, request)
                times.append((time.perf_counter() - started) * 1000)
                row = gateway.record(routed, executed, request)
                costs += row.cost
                waste += row.speculative_waste_cost
                paths[row.served_path] = paths.get(row.served_path, 0) + 1
            await asyncio.sleep(0.2)  # let cancelled calls reach the emulator before counting
            calls = emulator.stats()["total"] / len(prompts)
            print(f"{name:<12} {kind:<7} {statistics.median(times):8.1f} {statistics.mean(times):8.1f} "
                  f"{calls:9.2f} {costs / len(prompts):12.8f} {waste / len(prompts):12.8f}  {paths}")
    for provider in providers.values():
        await provider.aclose()
    emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--n", type=int, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
