"""Decision-cache lookup latency at 1k / 10k / 100k entries, against two baselines in the same run.

Entries are the local sentinel's embeddings of the 3,901 data prompts, each repeated with small
random perturbations to reach the size (so the vectors have the real, clustered distribution).
Queries: half are perturbed copies of stored entries (should hit), half are held-out prompts
with fresh noise (mostly miss). Baselines: brute force (float32 matrix x query, argmax) and a
naive Python loop over entries (1k only; it is far too slow beyond). Recall is measured
against brute force at the same threshold.

    OPENBLAS_NUM_THREADS=1 python bench/bench_cache.py [--queries 500] [--threshold 0.92]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from routing.engine.cache import CachedDecision, DecisionCache
from routing.engine.decision import RouteDecision
from routing.engine.local_sentinel.model import LocalSentinel

DECISION = RouteDecision("simple_qa", 0.95, "none", (), 100, False)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threshold", type=float, default=0.92)
    args = parser.parse_args()
    model = LocalSentinel()
    prompts = [json.loads(line)["prompt"] for name in ("train", "regression")
               for line in (ROOT / "data/sentinel" / f"{name}.jsonl").read_text().splitlines() if line]
    held = [json.loads(line)["prompt"] for line in (ROOT / "data/sentinel/heldout.jsonl").read_text().splitlines()]
    base = np.stack([model.analyse(p).embedding for p in prompts]).astype(np.float32)
    held_vecs = np.stack([model.analyse(p).embedding for p in held[:200]]).astype(np.float32)
    rng = np.random.default_rng(0)

    def perturb(v: np.ndarray, scale: float) -> np.ndarray:
        out = v + scale * rng.standard_normal(v.shape).astype(np.float32) / np.sqrt(v.shape[-1])
        return out / np.linalg.norm(out, axis=-1, keepdims=True)

    print(f"{'entries':>8} {'method':<22} {'p50 ms':>8} {'p99 ms':>8} {'hit rate':>8} {'recall':>7}")
    for size in (1_000, 10_000, 100_000):
        vectors = perturb(base[rng.integers(0, len(base), size)], 0.3)
        cache = DecisionCache(max_entries=size)
        created = time.monotonic()
        for i, v in enumerate(vectors):
            cache.insert(1, f"k{i}", v, CachedDecision(DECISION, "llm", 1, created))
        queries = [perturb(vectors[rng.integers(0, size)], 0.2) if i % 2 == 0 else
                   perturb(held_vecs[rng.integers(0, len(held_vecs))], 0.2) for i in range(args.queries)]
        matrix = vectors.astype(np.float32)
        truth, times = [], []
        for q in queries:
            t = time.perf_counter()
            scores = matrix @ q
            best = int(np.argmax(scores))
            times.append(time.perf_counter() - t)
            truth.append(best if scores[best] >= args.threshold else None)
        hits = sum(t is not None for t in truth)
        print(f"{size:>8} {'brute force float32':<22} {pct(times, 50):8.3f} {pct(times, 99):8.3f} "
              f"{hits / len(queries):8.3f} {1.0:7.3f}")
        times, found, agree = [], 0, 0
        for i, q in enumerate(queries):
            t = time.perf_counter()
            hit = cache.lookup(1, f"query-{size}-{i}", q, threshold=args.threshold)
            times.append(time.perf_counter() - t)
            found += hit is not None
            agree += (hit is not None) == (truth[i] is not None)
        recall = agree / len(queries)
        print(f"{size:>8} {'DecisionCache (simhash)':<22} {pct(times, 50):8.3f} {pct(times, 99):8.3f} "
              f"{found / len(queries):8.3f} {recall:7.3f}")
        times = []
        for i in range(len(queries)):
            t = time.perf_counter()
            cache.lookup(1, f"exact-miss-{i}", None, threshold=args.threshold)
            times.append(time.perf_counter() - t)
        print(f"{size:>8} {'exact only (hash)':<22} {pct(times, 50):8.3f} {pct(times, 99):8.3f} {'-':>8} {'-':>7}")
        if size == 1_000:
            rows = [(i, v.tolist()) for i, v in enumerate(vectors)]
            times = []
            for q in queries[:100]:
                ql = q.tolist()
                t = time.perf_counter()
                best = max(rows, key=lambda r: sum(a * b for a, b in zip(r[1], ql)))
                times.append(time.perf_counter() - t)
            print(f"{size:>8} {'naive Python loop':<22} {pct(times, 50):8.3f} {pct(times, 99):8.3f} {'-':>8} "
                  f"{'-':>7}")


if __name__ == "__main__":
    main()
