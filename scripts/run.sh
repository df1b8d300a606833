#!/usr/bin/env bash
# `make run`: migrate, load the default catalog, print demo logins and a demo key,
# start the provider emulator when no provider key is set, and serve with uvicorn (ASGI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export DEBUG=${DEBUG:-1}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
EMULATOR_PORT=${EMULATOR_PORT:-8765}

echo "==> migrating the database (${DATABASE_URL:-SQLite at var/db.sqlite3})"
$PY manage.py migrate --noinput -v0
echo "==> catalog, policy and demo accounts"
$PY manage.py bootstrap --demo

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

if [ -z "${ANTHROPIC_API_KEY:-}" ] || [ -z "${OPENAI_API_KEY:-}" ] || [ -z "${GEMINI_API_KEY:-}" ]; then
  export EMULATOR_URL=${EMULATOR_URL:-http://127.0.0.1:${EMULATOR_PORT}}
  echo "==> providers without an API key are SIMULATED by the emulator at ${EMULATOR_URL}"
  $PY -m routing.providers.emulator --host 127.0.0.1 --port "$EMULATOR_PORT" --latency-ms "${EMULATOR_LATENCY_MS:-150}" &
  pids+=($!)
  for _ in $(seq 1 50); do
    $PY -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/_emulator/stats', timeout=1)" \
      "$EMULATOR_URL" 2>/dev/null && break
    sleep 0.2
  done
  # Open on populated charts: simulated traffic (marked simulated everywhere) when the log is empty.
  if [ "$($PY manage.py shell -c 'from routing.models import Decision; print(Decision.objects.exists())' 2>/dev/null | tail -1)" = "False" ]; then
    echo "==> no traffic yet: simulating ${SIMULATE_REQUESTS:-400} requests over 14 days (labelled simulated)"
    $PY manage.py simulate_traffic --requests "${SIMULATE_REQUESTS:-400}" --days 14
  fi
fi

echo "==> serving on http://${HOST}:${PORT}  (API docs: /api/docs/, admin: /admin/)"
$PY -m uvicorn config.asgi:application --host "$HOST" --port "$PORT" --no-access-log &
pids+=($!)
wait -n "${pids[@]}"
