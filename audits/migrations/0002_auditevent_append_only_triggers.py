"""Database-level guard: the audit trail cannot be edited, whatever code (or SQL shell) tries.

PostgreSQL refuses UPDATE and DELETE of `audits_auditevent` rows (TRUNCATE, used by test
database flushes and deliberate operator resets, is not a row operation and still works).
SQLite refuses UPDATE only: its test flush deletes rows one table at a time, and a DELETE
trigger would make every transactional test's teardown fail.
"""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION audits_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audits_auditevent is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audits_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON audits_auditevent
    FOR EACH ROW EXECUTE FUNCTION audits_auditevent_append_only();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS audits_auditevent_no_update_delete ON audits_auditevent;
DROP FUNCTION IF EXISTS audits_auditevent_append_only();
"""
SQLITE_FORWARD = """
CREATE TRIGGER IF NOT EXISTS audits_auditevent_no_update
BEFORE UPDATE ON audits_auditevent
BEGIN
    SELECT RAISE(ABORT, 'audits_auditevent is append-only (UPDATE refused)');
END;
"""
SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS audits_auditevent_no_update;"


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_FORWARD, params=None)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("audits", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
