"""Settings fail at start with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG", "SECRET_KEY"}}
    clean.update({"SECRET_KEY": "x", **env})
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "env, name",
    [
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"GATEWAY_MAX_BODY_BYTES": "lots"}, "GATEWAY_MAX_BODY_BYTES"),
        ({"ANTHROPIC_BASE_URL": "not a url"}, "ANTHROPIC_BASE_URL"),
        ({"SECRET_KEY": "", "DEBUG": "0"}, "SECRET_KEY"),
    ],
)
def test_a_malformed_setting_stops_start_up_naming_the_variable(env, name):
    result = start(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr


def test_a_secret_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "print(settings.SECRET_KEY)"],
        cwd=ROOT, env={**os.environ, "SECRET_KEY": "", "SECRET_KEY_FILE": str(secret)},
        capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "from-a-file"


def test_check_deploy_is_clean_under_production_settings():
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECURE_SSL_REDIRECT"}}
    env["SECRET_KEY"] = "a-long-random-production-secret-key-0123456789-abcdefghijklmnop"
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("tuning, frozen, thresholds", [("1", True, "(5000, 20, 50)"), ("0", False, "(700, 10, 10)")])
def test_the_asgi_application_freezes_startup_objects_out_of_the_collector_unless_told_not_to(
        tuning, frozen, thresholds):
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG"}}
    clean.update({"SECRET_KEY": "x", "VAR_DIR": "var/test", "GATEWAY_GC_TUNING": tuning})
    result = subprocess.run(
        [sys.executable, "-c", "import gc, config.asgi; print(gc.get_freeze_count(), gc.get_threshold())"],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    count, _, threshold = result.stdout.strip().partition(" ")
    assert (int(count) > 10_000) is frozen and threshold == thresholds
