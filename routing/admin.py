"""Admin: the catalog is editable (every change kept in `CatalogChange`), the decision log
and histories are read-only, API keys are created (shown once), limited and revoked here."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.forms.models import model_to_dict
from django.http import HttpRequest

from .catalog_io import record_change
from .models import (
    ApiKey,
    Application,
    CatalogChange,
    CatalogSettings,
    Decision,
    Feedback,
    ModelPrice,
    PolicyVersion,
    Route,
    Tool,
)
from .services import (
    api_key_create,
    api_key_limits_validate,
    api_key_revoke,
    api_key_set_limits,
    bump_config_version,
)


class CatalogHistoryAdmin(admin.ModelAdmin):
    """Records an append-only history row for every add, edit and delete."""

    entity = ""

    def _values(self, obj) -> dict:
        values = model_to_dict(obj)
        values.pop("id", None)
        return values

    def save_model(self, request, obj, form, change):
        old = self._values(type(obj).objects.get(pk=obj.pk)) if change and obj.pk else None
        super().save_model(request, obj, form, change)
        record_change(actor=request.user.get_username(), source="admin", entity=self.entity, key=str(obj),
                      action="update" if change else "create", old=old, new=self._values(obj))
        bump_config_version()

    def delete_model(self, request, obj):
        record_change(actor=request.user.get_username(), source="admin", entity=self.entity, key=str(obj),
                      action="delete", old=self._values(obj), new=None)
        super().delete_model(request, obj)
        bump_config_version()

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(ModelPrice)
class ModelPriceAdmin(CatalogHistoryAdmin):
    entity = "price"
    list_display = ("model", "provider", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok",
                    "cache_write_per_mtok", "effective_from")
    list_filter = ("provider",)


@admin.register(Route)
class RouteAdmin(CatalogHistoryAdmin):
    entity = "route"
    list_display = ("name", "provider", "model", "model_version", "max_output_tokens", "tools_enabled",
                    "fallback", "cheap_tier", "enabled")


@admin.register(Tool)
class ToolAdmin(CatalogHistoryAdmin):
    entity = "tool"
    list_display = ("name", "description")


@admin.register(CatalogSettings)
class CatalogSettingsAdmin(CatalogHistoryAdmin):
    entity = "baseline"
    list_display = ("baseline_model", "updated_at")

    def has_add_permission(self, request):
        return not CatalogSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(CatalogChange)
class CatalogChangeAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "source", "entity", "entity_key", "action")
    list_filter = ("entity", "source", "action")


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "request_id", "application", "route", "confidence", "executor_model_version",
                    "cost", "baseline_cost", "total_ms", "status", "simulated")
    list_filter = ("route", "status", "endpoint", "simulated", "escalated")
    search_fields = ("request_id",)
    date_hierarchy = "created_at"
    fieldsets = (
        ("1. Request", {"fields": ("request_id", "created_at", "application", "api_key_prefix", "endpoint",
                                   "policy_version", "stream", "metadata")}),
        ("2. Decision", {"fields": ("sentinel_kind", "sentinel_model", "sentinel_decision", "sentinel_error",
                                    "local_decision", "guard_flags", "cache_hit", "sentinel_calls_saved",
                                    "route_decided", "confidence", "route", "policy_reason", "escalated",
                                    "served_path")}),
        ("3. Executor", {"fields": ("executor_provider", "executor_model", "executor_model_version", "attempts")}),
        ("4. Tokens", {"fields": ("sentinel_input_tokens", "sentinel_output_tokens", "sentinel_cached_tokens",
                                  "executor_input_tokens", "executor_output_tokens", "executor_cached_tokens",
                                  "executor_cache_write_tokens")}),
        ("5. Latency (ms)", {"fields": ("sentinel_ms", "executor_ms", "overhead_ms", "total_ms")}),
        ("6. Quality", {"fields": ("feedback_score", "judge_score")}),
        ("Cost (USD)", {"fields": ("sentinel_cost", "executor_cost", "cost", "baseline_cost",
                                   "speculative_waste_tokens", "speculative_waste_cost")}),
        ("Outcome", {"fields": ("status", "error", "simulated")}),
    )

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "request_id", "application", "score", "thumbs")


@admin.register(PolicyVersion)
class PolicyVersionAdmin(ReadOnlyAdmin):
    """Policies change only through the reviewed proposal workflow, never by editing here."""

    list_display = ("number", "status", "confidence_threshold", "fallback_route", "sentinel_provider",
                    "sentinel_model", "sentinel_prompt_version", "activated_at")


@admin.register(Application)
class ApplicationAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")


LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "daily_budget", "monthly_budget")


class ApiKeyForm(forms.ModelForm):
    """The key's limits, validated by the service's rules (positive rates, budgets >= 0)."""

    class Meta:
        model = ApiKey
        fields = ("name", "application", *LIMIT_FIELDS)

    def clean(self) -> dict:
        cleaned = super().clean()
        try:
            api_key_limits_validate(**{name: cleaned.get(name) for name in LIMIT_FIELDS})
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                if name in self.fields:
                    self.add_error(name, errors)
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "application", "prefix", "requests_per_minute", "tokens_per_minute", "daily_budget",
                    "monthly_budget", "created_at", "revoked_at")
    fieldsets = (
        (None, {"fields": ("name", "application")}),
        ("Limits", {
            "fields": LIMIT_FIELDS,
            "description": "Empty means no limit. Requests and tokens per minute are sliding 60-second windows "
                           "(tokens: the executor's input and output); budgets are USD per UTC day and month. "
                           "A change applies in every process within half a second.",
        }),
    )
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return ("name", "application") if obj else ()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        limits = {name: form.cleaned_data.get(name) for name in LIMIT_FIELDS}
        if change:
            api_key_set_limits(key=obj, **limits)
            return
        key, raw = api_key_create(name=obj.name, application=obj.application, **limits)
        obj.pk = key.pk
        messages.warning(request, f"New API key (shown once, copy it now): {raw}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")
