"""The eval_sentinel gate: the regression set passes with the local sentinel; a doctored file fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

REPO = Path(__file__).resolve().parents[2]
REGRESSION = REPO / "data" / "sentinel" / "regression.jsonl"


@pytest.mark.django_db
def test_the_local_sentinel_passes_the_gate_on_the_regression_set(capsys):
    call_command("eval_sentinel", "--dataset", str(REGRESSION), "--sentinel", "local", "--json",
                 "--max-error", "0.03")
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 391 and report["misclassification"] <= 0.03
    assert report["ece"] < 0.05 and report["buckets"]
    assert set(report["per_route"]) >= {"simple_qa", "complex_reasoning", "refusal_required"}
    assert 0 <= report["escalation_rate"] < 0.1
    assert float(report["cost"]["routed"]) < float(report["cost"]["baseline"])
    assert report["latency_ms"]["p99"] > 0


def _doctored(tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in REGRESSION.read_text().splitlines() if line]
    routes = ["simple_qa", "complex_reasoning", "code_generation", "agentic_task", "refusal_required"]
    for i, r in enumerate(rows[:60]):  # relabel 60 rows (~15 %) to a wrong route
        r["route"] = next(x for x in routes if x != r["route"])
    rows.append({"prompt": "hello", "route": "premium_tier"})
    path = tmp_path / "doctored.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.django_db
def test_a_doctored_file_fails_the_gate_and_reports_unknown_routes(tmp_path, capsys):
    with pytest.raises(CommandError, match="exceeds --max-error"):
        call_command("eval_sentinel", "--dataset", str(_doctored(tmp_path)), "--sentinel", "local")
    out = capsys.readouterr().out
    assert "premium_tier" in out and "skipped 1 of 392" in out


def test_the_command_exits_non_zero_for_ci(tmp_path):
    env = {**os.environ, "SECRET_KEY": "x", "VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": ""}
    env.pop("DATABASE_URL")
    result = subprocess.run(
        [sys.executable, "manage.py", "eval_sentinel", "--dataset", str(_doctored(tmp_path)), "--sentinel", "local"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "exceeds --max-error" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_the_gate_runs_an_llm_sentinel_through_the_emulator(tmp_path, emu, capsys):
    rows = [json.loads(line) for line in REGRESSION.read_text().splitlines() if line][:20]
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(CommandError):  # the emulator's keyword heuristics are not a 3 % classifier
        call_command("eval_sentinel", "--dataset", str(path), "--sentinel", "openai", "--json", "--max-error", "0")
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 20 and report["sentinel_kinds"] == {"llm": 20}
    assert emu.stats()["by_provider"]["openai"] == 20
