"""Latency and memory of the local sentinel on one core, by prompt length.

Pins itself to one CPU and one BLAS/OpenMP thread, then times `LocalSentinel.decide`
on prompts of about 10, 100, 500 and 2,000 tokens (plus 30,000 for the length rule),
built from held-out prompts so the text is realistic. In the same run it times a
baseline: the full all-MiniLM-L6-v2 transformer in numpy (the contextual embedding the
static table was distilled from), when its weights are given with --minilm.

    python bench/bench_local_sentinel.py [--minilm PATH_TO_WHEEL_OR_DIR] [--repeats 300]
"""

from __future__ import annotations

import os

# One thread before numpy loads: the figure that matters is per decision on one core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
    os.environ[_var] = "false" if _var == "TOKENIZERS_PARALLELISM" else "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.engine.local_sentinel.model import DEFAULT_ARTEFACT, LocalSentinel  # noqa: E402

BUCKETS = (10, 100, 500, 2_000, 30_000)


def prompts_of_length(sentinel: LocalSentinel, corpus: list[str], target: int, n: int) -> list[str]:
    """n prompts of about `target` tokens: held-out prompts cut or concatenated to size."""
    out = []
    i = 0
    while len(out) < n:
        text = ""
        while sentinel.counter.count(text) < target:
            text += ("\n\n" if text else "") + corpus[i % len(corpus)]
            i += 1
        # Cut back to the target by bisection on characters.
        lo, hi = 1, len(text)
        while lo < hi:
            mid = (lo + hi) // 2
            if sentinel.counter.count(text[:mid]) < target:
                lo = mid + 1
            else:
                hi = mid
        out.append(text[:lo])
    return out


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples_ms)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artefact", type=Path, default=DEFAULT_ARTEFACT)
    parser.add_argument("--data", type=Path, default=Path("data/sentinel/heldout.jsonl"))
    parser.add_argument("--minilm", type=Path, help="all-MiniLM-L6-v2 weights for the baseline")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    sentinel = LocalSentinel(args.artefact)
    load_ms = (time.perf_counter() - t0) * 1000
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    corpus = [json.loads(line)["prompt"] for line in open(args.data, encoding="utf-8")]
    corpus = [p for p in corpus if len(p) < 4000]

    baseline = None
    if args.minilm:
        from routing.engine.local_sentinel.train import minilm_sentence_embedding, read_minilm

        weights, _ = read_minilm(args.minilm)
        baseline = weights

    print(f"artefact {args.artefact.name} ({args.artefact.stat().st_size / 1e6:.1f} MB), load {load_ms:.0f} ms, "
          f"pinned to CPU {args.cpu}, 1 thread")
    header = f"{'tokens':>7s} {'n':>5s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}"
    if baseline is not None:
        header += f"   {'MiniLM p50 ms':>13s} {'MiniLM p99 ms':>13s}"
    print(header)
    for target in BUCKETS:
        n = args.repeats if target < 30_000 else max(20, args.repeats // 10)
        texts = prompts_of_length(sentinel, corpus, target, min(n, 50))
        for text in texts[:5]:
            sentinel.decide(text)  # warm-up
        samples = []
        for i in range(n):
            text = texts[i % len(texts)]
            started = time.perf_counter()
            sentinel.decide(text)
            samples.append((time.perf_counter() - started) * 1000)
        p50, p99 = percentiles(samples)
        line = f"{target:7d} {n:5d} {p50:8.3f} {p99:8.3f} {max(samples):8.3f}"
        if baseline is not None and target <= 2_000:
            # The transformer reads at most 512 positions: longer prompts go in 256-token chunks.
            base = []
            for text in texts[: max(3, min(20, 20 * 100 // target))]:
                ids = sentinel.counter.tokenizer.encode(text, add_special_tokens=False).ids
                started = time.perf_counter()
                for start in range(0, max(1, len(ids)), 254):
                    minilm_sentence_embedding(baseline, [101, *ids[start : start + 254], 102])
                base.append((time.perf_counter() - started) * 1000)
            b50, b99 = percentiles(base)
            line += f"   {b50:13.1f} {b99:13.1f}"
        print(line)
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {rss_before / 1024:.0f} MB before load, {rss_loaded / 1024:.0f} MB after load, "
          f"{rss_end / 1024:.0f} MB at end" + (" (includes the MiniLM baseline's weights)" if baseline else ""))


if __name__ == "__main__":
    main()
