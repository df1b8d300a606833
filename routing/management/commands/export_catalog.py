"""manage.py export_catalog [--output FILE] — the whole catalog as YAML."""

import yaml
from django.core.management.base import BaseCommand

from routing.catalog_io import catalog_export


class Command(BaseCommand):
    help = "Write the catalog (prices, routes, tools, baseline) as YAML."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", default=None, help="File to write (default: stdout)")

    def handle(self, *args, output=None, **options):
        text = yaml.safe_dump(catalog_export(), sort_keys=False, allow_unicode=True)
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
            self.stderr.write(f"Wrote catalog to {output}")
        else:
            self.stdout.write(text, ending="")
