"""Metrics for routing classifiers: accuracy, per-route precision/recall, confusion, calibration.

Everything here is a pure function over plain lists, so the `eval_sentinel` command,
the training pipeline and the tests share one definition. A prediction is a
`(predicted_route, true_route, confidence)` triple.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Prediction = tuple[str, str, float]


@dataclass(frozen=True)
class Bucket:
    low: float
    high: float
    count: int
    mean_confidence: float
    accuracy: float

    @property
    def gap(self) -> float:
        return abs(self.accuracy - self.mean_confidence)


def calibration_table(predictions: Sequence[Prediction], n_buckets: int = 10) -> list[Bucket]:
    """Equal-width confidence buckets; bucket i holds low < c <= high (the first also holds 0)."""
    buckets: list[list[Prediction]] = [[] for _ in range(n_buckets)]
    for p in predictions:
        confidence = min(1.0, max(0.0, float(p[2])))
        # round() first so 0.3 * 10 lands in (0.2, 0.3], not past it by float error.
        index = min(n_buckets - 1, max(0, math.ceil(round(confidence * n_buckets, 9)) - 1))
        buckets[index].append(p)
    table = []
    for i, items in enumerate(buckets):
        n = len(items)
        table.append(
            Bucket(
                low=i / n_buckets,
                high=(i + 1) / n_buckets,
                count=n,
                mean_confidence=sum(c for _, _, c in items) / n if n else 0.0,
                accuracy=sum(pred == true for pred, true, _ in items) / n if n else 0.0,
            )
        )
    return table


def expected_calibration_error(predictions: Sequence[Prediction], n_buckets: int = 10) -> float:
    """ECE = sum over buckets of (bucket size / total) * |accuracy - mean confidence|."""
    total = len(predictions)
    if not total:
        return 0.0
    return sum(b.count / total * b.gap for b in calibration_table(predictions, n_buckets))


def accuracy(predictions: Sequence[Prediction]) -> float:
    return sum(pred == true for pred, true, _ in predictions) / len(predictions) if predictions else 0.0


def confusion_matrix(predictions: Iterable[Prediction], labels: Sequence[str]) -> list[list[int]]:
    """matrix[i][j] = how many items of true label i were predicted as label j."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for pred, true, _ in predictions:
        matrix[index[true]][index[pred]] += 1
    return matrix


def per_route(predictions: Sequence[Prediction], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    for label in labels:
        tp = sum(p == label and t == label for p, t, _ in predictions)
        predicted = sum(p == label for p, _, _ in predictions)
        actual = sum(t == label for _, t, _ in predictions)
        out[label] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / actual if actual else 0.0,
            "support": actual,
        }
    return out


def summary(predictions: Sequence[Prediction], labels: Sequence[str], n_buckets: int = 10) -> dict[str, Any]:
    acc = accuracy(predictions)
    return {
        "n": len(predictions),
        "accuracy": acc,
        "misclassification": 1.0 - acc,
        "ece": expected_calibration_error(predictions, n_buckets),
        "per_route": per_route(predictions, labels),
        "labels": list(labels),
        "confusion": confusion_matrix(predictions, labels),
        "buckets": [asdict(b) for b in calibration_table(predictions, n_buckets) if b.count],
    }


def format_report(result: dict[str, Any]) -> str:
    """Plain-text report: headline figures, per-route table, confusion matrix, calibration buckets."""
    lines = [
        f"n={result['n']}  accuracy={result['accuracy']:.4f}  "
        f"misclassification={result['misclassification']:.4f}  ECE={result['ece']:.4f}",
        "",
        f"{'route':24s} {'precision':>9s} {'recall':>7s} {'support':>7s}",
    ]
    for label, m in result["per_route"].items():
        lines.append(f"{label:24s} {m['precision']:9.3f} {m['recall']:7.3f} {m['support']:7d}")
    labels = result["labels"]
    lines += ["", "confusion (rows = true, columns = predicted, in label order above)"]
    for label, row in zip(labels, result["confusion"]):
        lines.append(f"{label:24s} " + " ".join(f"{v:5d}" for v in row))
    lines += ["", f"{'confidence':>12s} {'n':>6s} {'mean conf':>9s} {'accuracy':>8s}"]
    for b in result["buckets"]:
        lines.append(
            f"{b['low']:.1f}-{b['high']:.1f}".rjust(12)
            + f" {b['count']:6d} {b['mean_confidence']:9.3f} {b['accuracy']:8.3f}"
        )
    return "\n".join(lines)
