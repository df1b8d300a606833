"""Judge audits and drift alerts."""

from config.env import env_bool, env_decimal, env_int, env_str, env_url

JUDGE_MODEL = env_str("JUDGE_MODEL", "claude-opus-4-7")
# A route counts as frontier (for the over-routed flag) when its model's output price is at least this.
JUDGE_FRONTIER_MIN_OUTPUT_PRICE = env_decimal("JUDGE_FRONTIER_MIN_OUTPUT_PRICE", "10")
# Drift alerts are POSTed here as JSON when set (retried with exponential backoff).
ALERT_WEBHOOK_URL = env_url("ALERT_WEBHOOK_URL")
ALERT_WEBHOOK_BACKOFF_S = env_int("ALERT_WEBHOOK_BACKOFF_S", 2, minimum=0)
# Redact emails, phone and card numbers, IBANs, IPs and API-key-like secrets from the prompt text
# that is stored (judge audit samples, shadow captures); see routing/redaction.py. Off by default.
GATEWAY_REDACT_PII = env_bool("GATEWAY_REDACT_PII", False)
