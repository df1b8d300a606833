"""The governance REST API."""
