"""URLs of the audits app (governance proposals, reviews, audit trail)."""

urlpatterns: list = []
