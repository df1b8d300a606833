from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/cost/", views.cost, name="dashboard-cost"),
    path("dashboard/quality/", views.quality, name="dashboard-quality"),
    path("dashboard/latency/", views.latency, name="dashboard-latency"),
    path("dashboard/mix/", views.mix, name="dashboard-mix"),
    path("dashboard/calculator/", views.calculator, name="dashboard-calculator"),
    path("dashboard/plotly.min.js", views.plotly_js, name="dashboard-plotly-js"),
]
