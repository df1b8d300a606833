"""Plotly figure builders: selector dataclasses in, figures out. No ORM, no request.

Figures are plain plotly figure dicts ({"data": [...], "layout": {...}}) rendered without
plotly's Python-side validation: building `go.Figure` objects with a named template costs
~100 ms a chart, more than the rest of a page. Each builder returns None when there is
nothing to draw; the template then shows the chart's empty state instead.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import plotly.io as pio

from .selectors import CostPage, LatencyPage, MixPage, Overview, QualityPage

GRID = {"gridcolor": "#e5e9f0", "zerolinecolor": "#c8ced8"}
LAYOUT = {"margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "height": 360, "plot_bgcolor": "#fff",
          "legend": {"orientation": "h", "y": -0.2}}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


class Figure:
    """A plotly figure as plain data, with the two helpers the builders need."""

    def __init__(self, layout: dict[str, Any]) -> None:
        self.data: list[dict[str, Any]] = []
        self.layout = layout

    def add_bar(self, **trace: Any) -> None:
        self.data.append({"type": "bar", **trace})

    def add_scatter(self, **trace: Any) -> None:
        self.data.append({"type": "scatter", **trace})

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout}


def to_html(fig: Figure | None, div_id: str) -> str:
    if fig is None:
        return ""
    return pio.to_html(fig.to_dict(), include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG,
                       validate=False)


def _figure(title: str, **layout: Any) -> Figure:
    merged: dict[str, Any] = {"title": {"text": title}, **LAYOUT}
    for key, value in layout.items():
        axis, _, prop = key.partition("_")
        if axis in ("xaxis", "yaxis") and prop:
            merged.setdefault(axis, dict(GRID))[prop if prop != "title" else "title"] = (
                {"text": value} if prop == "title" else value)
        else:
            merged[key] = value
    merged.setdefault("xaxis", dict(GRID))
    merged.setdefault("yaxis", dict(GRID))
    return Figure(merged)


def overview_spend(page: Overview) -> Figure | None:
    if not page.series:
        return None
    x = [p.bucket for p in page.series]
    fig = _figure("Spend vs all-baseline spend (USD)", yaxis_title="USD")
    fig.add_bar(x=x, y=[float(p.cost) for p in page.series], name="routed spend")
    fig.add_scatter(x=x, y=[float(p.baseline_cost) for p in page.series], name="baseline spend", mode="lines+markers")
    return fig


def cost_spend_by_route(page: CostPage) -> Figure | None:
    if not page.by_period:
        return None
    per_route: dict[str, list] = defaultdict(lambda: [[], []])
    for bucket, route, cost in page.by_period:
        per_route[route][0].append(bucket)
        per_route[route][1].append(float(cost))
    fig = _figure("Spend per route (USD, stacked)", barmode="stack", yaxis_title="USD")
    for route, (x, y) in sorted(per_route.items()):
        fig.add_bar(x=x, y=y, name=route)
    return fig


def cost_per_million(page: CostPage) -> Figure | None:
    rows = [r for r in page.routes if r.requests]
    if not rows:
        return None
    fig = _figure("Cost per 1M requests (USD)", yaxis_title="USD per 1M requests")
    fig.add_bar(x=[r.route for r in rows], y=[float(r.cost_per_million_requests or 0) for r in rows], name="per 1M")
    return fig


def cost_tokens(page: CostPage) -> Figure | None:
    if not page.routes:
        return None
    x = [r.route for r in page.routes]
    fig = _figure("Executor tokens by kind", barmode="stack", yaxis_title="tokens")
    fig.add_bar(x=x, y=[r.uncached_input_tokens for r in page.routes], name="input (uncached)")
    fig.add_bar(x=x, y=[r.executor_cached_tokens for r in page.routes], name="input (cached)")
    fig.add_bar(x=x, y=[r.executor_output_tokens for r in page.routes], name="output")
    return fig


def cost_top_applications(page: CostPage) -> Figure | None:
    if not page.applications:
        return None
    apps = list(reversed(page.applications))
    fig = _figure("Top applications by spend (USD)", xaxis_title="USD")
    fig.add_bar(y=[a.application for a in apps], x=[float(a.cost) for a in apps], orientation="h", name="spend")
    return fig


def quality_by(rows, title: str) -> Figure | None:
    if not any(r.judge_count or r.feedback_count for r in rows):
        return None
    x = [r.key for r in rows]
    fig = _figure(title, barmode="group", yaxis_title="acceptable answers (%)", yaxis_range=[0, 100])
    fig.add_bar(x=x, y=[float(r.judge_acceptable_percent) if r.judge_count else None for r in rows],
                name="judge score ≥ 4")
    fig.add_bar(x=x, y=[float(r.feedback_acceptable_percent) if r.feedback_count else None for r in rows],
                name="user feedback ≥ 4")
    return fig


def quality_reliability(page: QualityPage) -> Figure | None:
    judged = [r for r in page.by_confidence if r.judge_count]
    rated = [r for r in page.by_confidence if r.feedback_count]
    if not judged and not rated:
        return None
    fig = _figure("Reliability: sentinel confidence vs acceptable-answer rate",
                  xaxis_title="mean confidence in bucket", yaxis_title="acceptable rate",
                  xaxis_range=[0, 1], yaxis_range=[0, 1])
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dot", "color": "#999"})
    if judged:
        fig.add_scatter(x=[r.judged_confidence_mean for r in judged], y=[r.judge_positive / r.judge_count for r in judged],
                        text=[r.key for r in judged], mode="lines+markers", name="judge")
    if rated:
        fig.add_scatter(x=[r.feedback_confidence_mean for r in rated],
                        y=[r.feedback_positive / r.feedback_count for r in rated],
                        text=[r.key for r in rated], mode="lines+markers", name="user feedback")
    return fig


def latency_stage(page: LatencyPage, stage: str, q: int) -> Figure | None:
    points = [p for p in page.series if p.percentiles[stage][q] is not None]
    if not points:
        return None
    per_route: dict[str, list] = defaultdict(lambda: [[], []])
    for p in points:
        per_route[p.route][0].append(p.bucket)
        per_route[p.route][1].append(p.percentiles[stage][q])
    fig = _figure(f"{stage.capitalize()} latency p{q} (ms)", yaxis_title="ms")
    for route, (x, y) in sorted(per_route.items()):
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=route)
    return fig


def mix_shares(page: MixPage) -> Figure | None:
    if not page.series:
        return None
    per_route: dict[str, list] = defaultdict(lambda: [[], []])
    for bucket, route, n in page.series:
        per_route[route][0].append(bucket)
        per_route[route][1].append(float(page.share(bucket, n) or 0))
    fig = _figure("Share of requests per route (%)", yaxis_title="% of requests", yaxis_range=[0, 100])
    for route, (x, y) in sorted(per_route.items()):
        fig.add_scatter(x=x, y=y, mode="lines", stackgroup="one", name=route)
    return fig
