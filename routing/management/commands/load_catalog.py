"""manage.py load_catalog FILE — validate and apply a catalog document in one transaction."""

from django.core.management.base import BaseCommand, CommandError

from routing.catalog_io import CatalogError, catalog_apply, load_catalog_file
from routing.services import bump_config_version


class Command(BaseCommand):
    help = "Apply a catalog YAML file (validated; all or nothing; every change kept in history)."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--actor", default="load_catalog", help="Who is applying it (for the history)")

    def handle(self, *args, file: str, actor: str, **options):
        try:
            doc = load_catalog_file(file)
        except CatalogError as exc:
            raise CommandError(f"invalid catalog: {exc}") from None
        changes = catalog_apply(doc=doc, actor=actor, source="load_catalog")
        bump_config_version()
        summary = ", ".join(f"{count} {kind}" for kind, count in changes.items())
        self.stdout.write(f"Catalog applied from {file}: {summary} changed.")
