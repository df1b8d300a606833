"""ASGI entry point, with a body-size guard in front of Django.

Django reads a whole request body before the view runs; the guard answers 413
with a JSON error as soon as the declared length (or the bytes received so far)
exceed `GATEWAY_MAX_BODY_BYTES`, so an oversized body is never read whole.
"""

import gc
import json
import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Static files (admin, API docs, plotly.js) are served from the installed packages.
django_application = ASGIStaticFilesHandler(get_asgi_application())

from django.conf import settings  # noqa: E402

from config.serving import ServingHandler  # noqa: E402

# Key-authenticated serving endpoints: no sessions, CSRF or messages, so no sync middleware hops.
SERVING_PATHS = ("/v1/", "/api/v1/route", "/api/v1/complete", "/api/v1/feedback")

serving_application = ServingHandler()

# Import the URLconf (and with it the provider SDKs) now, not on the first request.
from django.urls import get_resolver  # noqa: E402

get_resolver().url_patterns


async def dispatch(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith(SERVING_PATHS):
        return await serving_application(scope, receive, send)
    return await django_application(scope, receive, send)


class BodyLimit:
    """413 before the body is read whole, with or without a content-length.

    1. A declared content-length over the limit (or malformed) is refused before Django runs.
    2. A body without one (chunked) is counted as it arrives; the chunk that crosses the limit is
       answered as a client disconnect, so Django abandons the request before any view runs (a
       truncated body that happens to be valid JSON must never be served), and the guard sends 413.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _reject(self, send) -> None:
        body = json.dumps({"error": {"code": "body_too_large",
                                     "message": f"request body exceeds {self.limit} bytes", "field": None}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit or declared < 0:
                    return await self._reject(send)
        received = 0
        too_large = False

        async def guarded_receive():
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    # Stop reading: Django's body reader gives up on a disconnect, and no view runs.
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message):
            nonlocal started
            if too_large:
                return None  # the 413 below is the only response
            if message["type"] == "http.response.start":
                started = True
            return await send(message)

        await self.app(scope, guarded_receive, guarded_send)
        if too_large and not started:
            await self._reject(send)


application = BodyLimit(dispatch, settings.GATEWAY_MAX_BODY_BYTES)


# Python's defaults are (700, 10, 10). Young generations of 700, 5,000 and 20,000 (all with the
# freeze) were within the machine's noise of each other in same-run A/Bs (docs/BENCHMARKS.md);
# 5,000 makes young collections rarer without making each one long.
GC_THRESHOLDS = (5_000, 20, 50)


def tune_gc() -> None:
    """Take the collector off the serving path's back, once everything is imported.

    A full collection walks every tracked object, and after startup most of them are Django's
    and the SDKs', alive for good: under load those walks took ~13 % of the
    event loop's time in pauses of tens of milliseconds (py-spy). `gc.freeze()` moves what is
    alive now to the permanent generation, which collections skip; a higher young-generation
    threshold makes collections rarer (requests make few reference cycles). Measured A/B in
    docs/BENCHMARKS.md. GATEWAY_GC_TUNING=0 keeps Python's defaults.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


if settings.GATEWAY_GC_TUNING:
    tune_gc()
