"""The filter bar every page shares: date range (UTC days, inclusive), application, route, model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.db.models import Q
from django.utils import timezone

DEFAULT_DAYS = 30
MAX_DAYS = 400
HOURLY_MAX_DAYS = 3  # ranges up to this many days are charted per hour, longer ones per day


@dataclass(frozen=True)
class Filters:
    start: date
    end: date  # inclusive
    application_id: int | None = None
    route: str = ""
    model: str = ""

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def end_before(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def hourly(self) -> bool:
        return self.days <= HOURLY_MAX_DAYS

    def cells(self) -> Q:
        """Rollup rows inside the filters (day and hour tables share their columns)."""
        q = Q(bucket__gte=self.start_at, bucket__lt=self.end_before)
        if self.application_id is not None:
            q &= Q(application_id=self.application_id)
        if self.route:
            q &= Q(route=self.route)
        if self.model:
            q &= Q(executor_model=self.model)
        return q

    def querystring(self) -> str:
        params = {"start": self.start.isoformat(), "end": self.end.isoformat()}
        if self.application_id is not None:
            params["application"] = str(self.application_id)
        if self.route:
            params["route"] = self.route
        if self.model:
            params["model"] = self.model
        return urlencode(params)


class FilterForm(forms.Form):
    start = forms.DateField(required=False)
    end = forms.DateField(required=False)
    application = forms.IntegerField(required=False, min_value=0)
    route = forms.CharField(required=False, max_length=64)
    model = forms.CharField(required=False, max_length=120)

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        if start and end and (end - start).days >= MAX_DAYS:
            raise forms.ValidationError(f"Pick at most {MAX_DAYS} days.")
        return data


def default_filters(today: date | None = None) -> Filters:
    today = today or timezone.now().date()
    return Filters(start=today - timedelta(days=DEFAULT_DAYS - 1), end=today)


def parse_filters(params) -> tuple[Filters, FilterForm]:
    """Filters from a query string; anything invalid falls back to the default (and the form says why)."""
    form = FilterForm(params)
    fallback = default_filters()
    if not form.is_valid():
        return fallback, form
    data = form.cleaned_data
    end = data.get("end") or fallback.end
    start = data.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
    return Filters(start=start, end=end, application_id=data.get("application"),
                   route=data.get("route") or "", model=data.get("model") or ""), form
