"""Rollup tables for the dashboards will live here (see the dashboards issue)."""
