import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_health_reports_the_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    data = response.json()
    assert data["database"] == "ok" and data["status"] == "ok"
    assert data["broker"] in ("ok", "in-process")
