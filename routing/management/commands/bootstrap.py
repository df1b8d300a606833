"""manage.py bootstrap [--demo] — default catalog if empty, an active policy, and (with --demo)
demo users and a demo API key for `make run`, printed at the end."""

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from routing.catalog_io import DEFAULT_CATALOG, catalog_apply, load_catalog_file
from routing.models import Route
from routing.services import api_key_create, application_get_or_create, policy_bootstrap

ROLES = ("engineer", "reviewer", "finance")
DEMO_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = "Load the default catalog when empty, ensure an active policy; --demo adds demo users and a key."

    def add_arguments(self, parser):
        parser.add_argument("--demo", action="store_true")

    def handle(self, *args, demo: bool, **options):
        if not Route.objects.exists():
            catalog_apply(doc=load_catalog_file(DEFAULT_CATALOG), actor="bootstrap", source="bootstrap")
            self.stdout.write("Loaded the default catalog.")
        policy = policy_bootstrap()
        self.stdout.write(f"Active policy: v{policy.number} (threshold {policy.confidence_threshold}).")
        for role in ROLES:
            Group.objects.get_or_create(name=role)
        if not demo:
            return
        User = get_user_model()
        lines = []
        admin, created = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        if created:
            admin.set_password(DEMO_PASSWORD)
            admin.save()
        lines.append(f"  admin / {DEMO_PASSWORD}  (superuser)")
        for role in ROLES:
            user, created = User.objects.get_or_create(username=role, defaults={"is_staff": True})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
                user.groups.add(Group.objects.get(name=role))
            lines.append(f"  {role} / {DEMO_PASSWORD}")
        app = application_get_or_create(name="demo-app")
        _, raw = api_key_create(name=f"demo key {app.api_keys.count() + 1}", application=app)
        port = os.environ.get("PORT", "8000")
        self.stdout.write(f"Demo logins (http://127.0.0.1:{port}/admin/):")
        for line in lines:
            self.stdout.write(line)
        self.stdout.write(f"Demo API key (application demo-app): {raw}")
