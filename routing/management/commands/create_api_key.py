"""manage.py create_api_key --name NAME [--application APP] — prints the new key alone on its last line."""

from django.core.management.base import BaseCommand, CommandError

from routing.services import api_key_create, application_get_or_create


class Command(BaseCommand):
    help = "Create an API key (shown once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="A label for the key")
        parser.add_argument("--application", default=None, help="Application name (default: the key's name)")

    def handle(self, *args, name: str, application: str | None, **options):
        name = name.strip()
        if not name:
            raise CommandError("--name must not be empty")
        app = application_get_or_create(name=(application or name).strip())
        key, raw = api_key_create(name=name, application=app)
        self.stderr.write(f"Created key {key.prefix}… for application {app.name!r}. It is shown once; store it now.")
        self.stdout.write(raw)
