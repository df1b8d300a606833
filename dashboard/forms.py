"""The what-if calculator's GET form: defaults from recent traffic, every input editable."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import forms

from . import metrics
from .calculator import HUNDRED, RouteAssumption, Scenario
from .selectors import TrafficProfile

EXAMPLE_REQUESTS_PER_DAY = 10_000
EXAMPLE_TOKENS = {"input_tokens": 500, "output_tokens": 300, "sentinel_input_tokens": 400, "sentinel_output_tokens": 60}


def _mean(total: int, n: int) -> Decimal:
    return (Decimal(total) / n).quantize(Decimal(1), rounding=ROUND_HALF_UP) if n else Decimal(0)


def calculator_initial(
    *, profile: TrafficProfile, routes: list[tuple[str, str]], sentinel_model: str, baseline_model: str
) -> dict[str, object]:
    """Form defaults: the profile's means and route mix, or an example when there was no traffic."""
    n = profile.requests
    initial: dict[str, object] = {"sentinel_model": sentinel_model, "baseline_model": baseline_model,
                                  "days_per_month": 30}
    names = [name for name, _ in routes] + sorted(set(profile.route_requests) - {name for name, _ in routes})
    models = dict(routes)
    if n:
        initial.update(
            requests_per_day=_mean(n, profile.days),
            input_tokens=_mean(profile.executor_input_tokens, n),
            output_tokens=_mean(profile.executor_output_tokens, n),
            cached_input_percent=metrics.percent(profile.executor_cached_tokens, profile.executor_input_tokens)
            or Decimal(0),
            sentinel_input_tokens=_mean(profile.sentinel_input_tokens, n),
            sentinel_output_tokens=_mean(profile.sentinel_output_tokens, n),
        )
        shares = metrics.largest_remainder([profile.route_requests.get(name, 0) for name in names], HUNDRED)
    else:
        initial.update(requests_per_day=EXAMPLE_REQUESTS_PER_DAY, cached_input_percent=Decimal(0), **EXAMPLE_TOKENS)
        shares = metrics.largest_remainder([1] * len(names), HUNDRED)
    for name, share in zip(names, shares, strict=True):
        initial[f"share__{name}"] = share
        initial[f"model__{name}"] = models.get(name, baseline_model)
    initial["_routes"] = names
    return initial


class CalculatorForm(forms.Form):
    requests_per_day = forms.DecimalField(min_value=0, max_digits=14, decimal_places=2, label="Requests per day")
    input_tokens = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2, label="Mean input tokens")
    output_tokens = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2, label="Mean output tokens")
    cached_input_percent = forms.DecimalField(min_value=0, max_value=100, max_digits=5, decimal_places=2,
                                              label="Cached share of input (%)")
    sentinel_model = forms.ChoiceField(label="Sentinel model")
    sentinel_input_tokens = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2,
                                               label="Sentinel prompt size (input tokens per request)")
    sentinel_output_tokens = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2,
                                                label="Sentinel output tokens per request")
    baseline_model = forms.ChoiceField(label="Baseline model")
    days_per_month = forms.IntegerField(min_value=1, max_value=31, label="Days per month")

    def __init__(self, *args, routes: list[str], models: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.routes = routes
        choices = [(m, m) for m in models]
        self.fields["sentinel_model"].choices = choices
        self.fields["baseline_model"].choices = choices
        for route in routes:
            self.fields[f"share__{route}"] = forms.DecimalField(min_value=0, max_value=100, max_digits=5,
                                                                decimal_places=2, label=f"{route} share (%)")
            self.fields[f"model__{route}"] = forms.ChoiceField(choices=choices, label=f"{route} model")

    def route_fields(self):
        return [(route, self[f"share__{route}"], self[f"model__{route}"]) for route in self.routes]

    def clean(self):
        data = super().clean()
        shares = [data.get(f"share__{route}") for route in self.routes]
        if all(s is not None for s in shares) and sum(shares, Decimal(0)) != HUNDRED:
            raise forms.ValidationError(f"Route shares add up to {sum(shares, Decimal(0))} %, not 100 %.")
        return data

    def scenario(self) -> Scenario:
        d = self.cleaned_data
        return Scenario(
            requests_per_day=d["requests_per_day"], input_tokens=d["input_tokens"], output_tokens=d["output_tokens"],
            cached_input_percent=d["cached_input_percent"],
            routes=tuple(RouteAssumption(route, d[f"share__{route}"], d[f"model__{route}"]) for route in self.routes),
            sentinel_model=d["sentinel_model"], sentinel_input_tokens=d["sentinel_input_tokens"],
            sentinel_output_tokens=d["sentinel_output_tokens"], baseline_model=d["baseline_model"],
            days_per_month=d["days_per_month"],
        )
