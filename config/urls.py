from django.contrib import admin
from django.urls import include, path

from routing import health, metrics

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("", include("routing.api.urls")),
    path("", include("audits.urls")),
    path("", include("dashboard.urls")),
]
