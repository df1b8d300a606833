"""GET /healthz — checks the database and, when configured, the broker and cache."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {type(exc).__name__}"


def _check_broker() -> str:
    if not settings.CELERY_BROKER_URL:
        return "in-process"
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"


async def healthz(request: HttpRequest) -> JsonResponse:
    database = await sync_to_async(_check_database)()
    broker = await sync_to_async(_check_broker, thread_sensitive=False)()
    ok = database == "ok" and not broker.startswith("error")
    return JsonResponse({"status": "ok" if ok else "degraded", "database": database, "broker": broker},
                        status=200 if ok else 503)
