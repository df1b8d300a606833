"""Governance, shadow experiments, judge audits and drift live here (see the open issues)."""
