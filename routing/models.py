"""Routing data: the catalog (prices, routes, tools, baseline), policy versions,
applications and their API keys, and the decision log.

Routes are rows, not an enum; prices are effective-dated Decimal rows; catalog
edits are kept in an append-only `CatalogChange` history.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

MONEY = {"max_digits": 24, "decimal_places": 10}
PRICE = {"max_digits": 14, "decimal_places": 6}


class Provider(models.TextChoices):
    ANTHROPIC = "anthropic", "Anthropic"
    OPENAI = "openai", "OpenAI"
    GEMINI = "gemini", "Google Gemini"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server (vLLM, Ollama)"
    GUARDRAIL = "guardrail", "Guardrail chain (no model call)"


class ModelPrice(models.Model):
    """Price of one model per 1M tokens, from `effective_from` until a later row replaces it."""

    model = models.CharField(max_length=120, db_index=True, help_text="Catalog model name, e.g. claude-haiku-4-5")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    input_per_mtok = models.DecimalField(**PRICE)
    output_per_mtok = models.DecimalField(**PRICE)
    cached_input_per_mtok = models.DecimalField(**PRICE)
    cache_write_per_mtok = models.DecimalField(**PRICE)
    effective_from = models.DateField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="uniq_price_per_day")]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"


class Tool(models.Model):
    """A tool the sentinel may say a request needs (the tool registry)."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """A route: where a class of requests is executed. Operators add and edit these rows."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=400, blank=True, help_text="Shown to the sentinel as the route's rule.")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    model = models.CharField(max_length=120, help_text="Catalog model name used for pricing.")
    model_version = models.CharField(max_length=160, help_text="Exact model id sent to the provider (pinned).")
    max_output_tokens = models.PositiveIntegerField(default=2048)
    tools_enabled = models.BooleanField(default=False)
    fallback = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    cheap_tier = models.BooleanField(default=False, help_text="Counts as cheap-tier traffic on dashboards.")
    enabled = models.BooleanField(default=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class CatalogSettings(models.Model):
    """Single row: the baseline model every request is priced against."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    baseline_model = models.CharField(max_length=120, default="claude-opus-4-7")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "catalog settings"
        verbose_name_plural = "catalog settings"

    def __str__(self) -> str:
        return f"baseline {self.baseline_model}"


class CatalogChange(models.Model):
    """Append-only history of catalog edits (admin, load_catalog, services)."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150)
    source = models.CharField(max_length=32)
    entity = models.CharField(max_length=32)
    entity_key = models.CharField(max_length=160)
    action = models.CharField(max_length=16)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class PolicyStatus(models.TextChoices):
    DRAFT = "draft"
    PROPOSED = "proposed"
    EVALUATED = "evaluated"
    APPROVED = "approved"
    REJECTED = "rejected"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled_back"


class SentinelMode(models.TextChoices):
    LLM = "llm", "LLM sentinel"
    LOCAL = "local", "Local classifier"
    TIERED = "tiered", "Local, then LLM when unsure"


class PolicyVersion(models.Model):
    """Everything that decides where traffic goes. Immutable once proposed; one is active."""

    number = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=16, choices=PolicyStatus.choices, default=PolicyStatus.DRAFT, db_index=True)
    confidence_threshold = models.DecimalField(
        max_digits=4, decimal_places=3, default="0.750",
        validators=[MinValueValidator(0), MaxValueValidator(1)],
    )
    fallback_route = models.CharField(max_length=64, default="complex_reasoning")
    sentinel_mode = models.CharField(max_length=16, choices=SentinelMode.choices, default=SentinelMode.LLM)
    sentinel_provider = models.CharField(max_length=32, choices=Provider.choices, default=Provider.ANTHROPIC)
    sentinel_model = models.CharField(max_length=120, default="claude-haiku-4-5")
    sentinel_model_version = models.CharField(max_length=160, default="claude-haiku-4-5-20251001")
    sentinel_prompt_version = models.CharField(max_length=32, default="v1")
    sentinel_max_tokens = models.PositiveIntegerField(default=256)
    sentinel_timeout_ms = models.PositiveIntegerField(default=5000)
    local_threshold = models.DecimalField(max_digits=4, decimal_places=3, default="0.900")
    registry_snapshot = models.JSONField(default=dict, blank=True)
    cache_similarity_threshold = models.DecimalField(max_digits=4, decimal_places=3, default="0.920")
    speculative = models.BooleanField(default=False)
    chained = models.BooleanField(default=False)
    judge_sample_rate = models.DecimalField(max_digits=5, decimal_places=4, default="0.0150")
    request_deadline_ms = models.PositiveIntegerField(default=120_000)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="active"), name="one_active_policy"
            )
        ]

    def __str__(self) -> str:
        return f"policy v{self.number} ({self.status})"


class Application(models.Model):
    """A client application; API keys, spend and decisions belong to one."""

    name = models.CharField(max_length=120, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """An API key, stored as a SHA-256 hash plus a short public prefix; shown once at creation."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Abuse limits (issue 7); null means "no limit". Enforced atomically by routing.limits.
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    daily_budget = models.DecimalField(**MONEY, null=True, blank=True, help_text="USD per UTC day.")
    monthly_budget = models.DecimalField(**MONEY, null=True, blank=True, help_text="USD per UTC month.")

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class DecisionStatus(models.TextChoices):
    OK = "ok"
    ERROR = "error"
    PARTIAL = "partial"


class Decision(models.Model):
    """One row per request: the six instrumentation fields, cost and baseline cost."""

    # 1. request id and time
    request_id = models.UUIDField(unique=True, default=uuid.uuid4)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    application = models.ForeignKey(Application, null=True, on_delete=models.SET_NULL, related_name="+")
    api_key_prefix = models.CharField(max_length=16, blank=True)
    endpoint = models.CharField(max_length=32)
    policy_version = models.ForeignKey(PolicyVersion, null=True, on_delete=models.SET_NULL, related_name="+")
    # 2. the sentinel decision and the route after policy
    sentinel_kind = models.CharField(max_length=16, help_text="llm, local, tiered-local, tiered-llm, cache, bypass")
    sentinel_model = models.CharField(max_length=160, blank=True)
    sentinel_decision = models.JSONField(null=True, blank=True, help_text="The full decision as emitted.")
    sentinel_error = models.CharField(max_length=300, blank=True)
    route_decided = models.CharField(max_length=64, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    route = models.CharField(max_length=64, db_index=True, help_text="Route after policy.")
    policy_reason = models.CharField(max_length=300)
    escalated = models.BooleanField(default=False)
    # 3. executor
    executor_provider = models.CharField(max_length=32, blank=True)
    executor_model = models.CharField(max_length=120, blank=True)
    executor_model_version = models.CharField(max_length=160, blank=True)
    # 4. tokens, sentinel and executor separately
    sentinel_input_tokens = models.PositiveIntegerField(default=0)
    sentinel_output_tokens = models.PositiveIntegerField(default=0)
    sentinel_cached_tokens = models.PositiveIntegerField(default=0)
    executor_input_tokens = models.PositiveIntegerField(default=0)
    executor_output_tokens = models.PositiveIntegerField(default=0)
    executor_cached_tokens = models.PositiveIntegerField(default=0)
    executor_cache_write_tokens = models.PositiveIntegerField(default=0)
    # 5. latency split
    sentinel_ms = models.FloatField(default=0)
    executor_ms = models.FloatField(default=0)
    overhead_ms = models.FloatField(default=0)
    total_ms = models.FloatField(default=0)
    # 6. quality signal (feedback now; judge later)
    feedback_score = models.PositiveSmallIntegerField(null=True, blank=True)
    judge_score = models.PositiveSmallIntegerField(null=True, blank=True)
    # money
    sentinel_cost = models.DecimalField(**MONEY, default=0)
    executor_cost = models.DecimalField(**MONEY, default=0)
    cost = models.DecimalField(**MONEY, default=0, help_text="Sentinel + executor.")
    baseline_cost = models.DecimalField(**MONEY, default=0)
    status = models.CharField(max_length=16, choices=DecisionStatus.choices, default=DecisionStatus.OK)
    error = models.CharField(max_length=500, blank=True)
    stream = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=1)
    retries = models.PositiveSmallIntegerField(default=0, help_text="Provider calls retried after a failure.")
    attempt_log = models.JSONField(
        default=list, blank=True,
        help_text="Every provider call: target, outcome, tokens, cost and latency (failed attempts included).",
    )
    simulated = models.BooleanField(default=False, help_text="Answered by the provider emulator.")
    metadata = models.JSONField(default=dict, blank=True)
    # guard, decision cache, local/tiered sentinel, execution modes (issue 3)
    guard_flags = models.JSONField(default=list, blank=True, help_text="Input-guard findings (routing attacks).")
    cache_hit = models.BooleanField(default=False, help_text="The decision came from the decision cache.")
    sentinel_calls_saved = models.PositiveSmallIntegerField(default=0, help_text="Sentinel calls a cache hit avoided.")
    local_decision = models.JSONField(
        null=True, blank=True, help_text="The local classifier's decision and probabilities."
    )
    served_path = models.CharField(
        max_length=24, default="plain",
        help_text="plain, speculative, speculative_cancelled, speculative_failed, chained, chained_fallback",
    )
    speculative_waste_tokens = models.PositiveIntegerField(default=0, help_text="Tokens of a cancelled speculative call.")
    speculative_waste_cost = models.DecimalField(
        **MONEY, default=0, help_text="Cost of a cancelled speculative call (included in cost)."
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["application", "created_at"])]

    def __str__(self) -> str:
        return f"{self.request_id} → {self.route}"


class Feedback(models.Model):
    """A user quality signal for a request id (thumbs or 1-5), joined to the decision by id."""

    request_id = models.UUIDField(db_index=True)
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="+")
    score = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(5)])
    thumbs = models.CharField(max_length=4, blank=True)
    comment = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request_id", "application"], name="one_feedback_per_request")]
