"""Writes: API keys, feedback, the bootstrap policy, decision rows, config-version bumps."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from dashboard.services import rollups_apply, rollups_scores_apply
from routing.engine.dispatch import DecisionRecord

from .limits import MAX_BUDGET
from .models import ApiKey, Application, Decision, Feedback, PolicyStatus, PolicyVersion

KEY_PREFIX = "rgw"
CONFIG_VERSION_KEY = "routing:config_version"


def hash_api_key(raw: str) -> str:
    """SHA-256 of the key. Keys carry 256 bits of randomness, so a slow KDF adds nothing
    but latency on every request; a fast hash is the right tool here."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def bump_config_version() -> None:
    """Tell every web process (through the shared cache) to reload catalog, policy and keys."""
    try:
        cache.incr(CONFIG_VERSION_KEY)
    except ValueError:
        cache.set(CONFIG_VERSION_KEY, 1, timeout=None)


def application_get_or_create(*, name: str) -> Application:
    application, _ = Application.objects.get_or_create(name=name)
    return application


@dataclass(frozen=True)
class ApiKeyLimits:
    """A key's abuse limits (None: unlimited); see routing/limits.py."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_budget: Decimal | None = None
    monthly_budget: Decimal | None = None


def api_key_limits_validate(
    *, requests_per_minute: Any = None, tokens_per_minute: Any = None, daily_budget: Any = None,
    monthly_budget: Any = None,
) -> ApiKeyLimits:
    """Positive integers for the rates, Decimal >= 0 for the budgets (from strings, never floats).

    Raises ValidationError with a message per field.
    """
    errors: dict[str, str] = {}
    rates: dict[str, int | None] = {}
    for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
        if value is None or value == "":
            rates[name] = None
            continue
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2_147_483_647:
            errors[name] = "must be a positive integer (or empty for no limit)"
        else:
            rates[name] = value
    budgets: dict[str, Decimal | None] = {}
    for name, value in (("daily_budget", daily_budget), ("monthly_budget", monthly_budget)):
        if value is None or value == "":
            budgets[name] = None
            continue
        if isinstance(value, (float, bool)):
            errors[name] = "must be a decimal amount given as a string, not a float"
            continue
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            errors[name] = "must be a decimal amount in USD, e.g. 25.00"
            continue
        if not amount.is_finite() or amount < 0:
            errors[name] = "must be a decimal amount >= 0"
        elif amount > MAX_BUDGET:
            errors[name] = f"must be at most {MAX_BUDGET} USD (or empty for no budget)"
        elif amount != amount.quantize(Decimal("0.0000000001")):
            errors[name] = "has more than 10 decimal places"
        else:
            budgets[name] = amount
    if errors:
        raise ValidationError(errors)
    return ApiKeyLimits(**rates, **budgets)


@transaction.atomic
def api_key_create(
    *, name: str, application: Application, requests_per_minute: Any = None, tokens_per_minute: Any = None,
    daily_budget: Any = None, monthly_budget: Any = None,
) -> tuple[ApiKey, str]:
    """Create a key; return the row and the raw key, which is never stored or shown again."""
    limits = api_key_limits_validate(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                                     daily_budget=daily_budget, monthly_budget=monthly_budget)
    prefix = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(application=application, name=name, prefix=prefix, key_hash=hash_api_key(raw),
                                **asdict(limits))
    return key, raw


@transaction.atomic
def api_key_set_limits(
    *, key: ApiKey, requests_per_minute: Any = None, tokens_per_minute: Any = None, daily_budget: Any = None,
    monthly_budget: Any = None,
) -> ApiKey:
    """Replace a key's limits; every process picks them up with the key cache (<= 0.5 s)."""
    limits = api_key_limits_validate(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                                     daily_budget=daily_budget, monthly_budget=monthly_budget)
    ApiKey.objects.filter(pk=key.pk).update(**asdict(limits))
    key.refresh_from_db()
    transaction.on_commit(bump_config_version)
    return key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key. Every process refuses it within `GATEWAY_API_KEY_CACHE_MS` (its key cache);
    the config-version bump also clears the caches of processes that check it sooner."""
    if key.revoked_at is None:
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        key.refresh_from_db()
        transaction.on_commit(bump_config_version)
    return key


def feedback_record(*, request_id: uuid.UUID, application_id: int, score: int, thumbs: str, comment: str) -> Feedback:
    """Store (or replace) the feedback for a request, and copy the score onto its decision row."""
    with transaction.atomic():
        feedback, _ = Feedback.objects.update_or_create(
            request_id=request_id,
            application_id=application_id,
            defaults={"score": score, "thumbs": thumbs, "comment": comment},
        )
        rollups_scores_apply(request_id=request_id, application_id=application_id, feedback_score=score)
        Decision.objects.filter(request_id=request_id, application_id=application_id).update(feedback_score=score)
    return feedback


@transaction.atomic
def policy_bootstrap() -> PolicyVersion:
    """Ensure exactly one active policy exists (version 1 with the documented defaults)."""
    active = PolicyVersion.objects.select_for_update().filter(status=PolicyStatus.ACTIVE).first()
    if active is not None:
        return active
    from .catalog_io import catalog_export

    number = (PolicyVersion.objects.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    policy = PolicyVersion.objects.create(
        number=number,
        status=PolicyStatus.ACTIVE,
        registry_snapshot={"routes": catalog_export()["routes"]},
        activated_at=timezone.now(),
        notes="Bootstrap policy with the documented defaults.",
    )
    transaction.on_commit(bump_config_version)
    return policy


def _decision_rows(records: Iterable[DecisionRecord | dict[str, Any]]) -> list[Decision]:
    rows = []
    for record in records:
        values = asdict(record) if isinstance(record, DecisionRecord) else dict(record)
        rows.append(Decision(**values))
    return rows


def decisions_insert(*, records: Iterable[DecisionRecord | dict[str, Any]]) -> int:
    """Insert decision rows; a row whose request id is already stored is skipped (replays are safe)."""
    rows = _decision_rows(records)
    if not rows:
        return 0
    try:
        with transaction.atomic():
            rollups_apply(rows)  # dashboard rollups: counts only the rows this insert stores
            Decision.objects.bulk_create(rows, ignore_conflicts=True)
    except IntegrityError:
        # A foreign key that vanished (deleted application or policy): keep the row, drop the link.
        for row in rows:
            row.application_id = None if not Application.objects.filter(pk=row.application_id).exists() else row.application_id
            row.policy_version_id = (
                None if not PolicyVersion.objects.filter(pk=row.policy_version_id).exists() else row.policy_version_id
            )
        with transaction.atomic():
            rollups_apply(rows)  # dashboard rollups: counts only the rows this insert stores
            Decision.objects.bulk_create(rows, ignore_conflicts=True)
    # Feedback can arrive before the row is written: copy it on.
    ids = [row.request_id for row in rows]
    for fb in Feedback.objects.filter(request_id__in=ids):
        Decision.objects.filter(
            request_id=fb.request_id, application_id=fb.application_id, feedback_score__isnull=True
        ).update(feedback_score=fb.score)
    return len(rows)
