"""manage.py create_api_key --name NAME [--application APP] [--rpm N] [--tpm N] [--daily-budget USD]
[--monthly-budget USD] — prints the new key alone on its last line."""

from dataclasses import asdict

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from routing.services import api_key_create, api_key_limits_validate, application_get_or_create


class Command(BaseCommand):
    help = "Create an API key (shown once; only its hash is stored), optionally with rate limits and budgets."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="A label for the key")
        parser.add_argument("--application", default=None, help="Application name (default: the key's name)")
        parser.add_argument("--rpm", default=None, help="Requests per minute (default: no limit)")
        parser.add_argument("--tpm", default=None, help="Executor tokens per minute (default: no limit)")
        parser.add_argument("--daily-budget", default=None, help="USD per UTC day, e.g. 25.00 (default: none)")
        parser.add_argument("--monthly-budget", default=None, help="USD per UTC month (default: none)")

    def handle(self, *args, name: str, application: str | None, rpm: str | None, tpm: str | None,
               daily_budget: str | None, monthly_budget: str | None, **options):
        name = name.strip()
        if not name:
            raise CommandError("--name must not be empty")
        try:
            # Strings all the way: the service parses integers and Decimals (never floats).
            limits = api_key_limits_validate(requests_per_minute=rpm, tokens_per_minute=tpm,
                                             daily_budget=daily_budget, monthly_budget=monthly_budget)
        except ValidationError as exc:
            flags = {"requests_per_minute": "--rpm", "tokens_per_minute": "--tpm",
                     "daily_budget": "--daily-budget", "monthly_budget": "--monthly-budget"}
            problems = "; ".join(f"{flags.get(field, field)} {' '.join(errors)}"
                                 for field, errors in exc.message_dict.items())
            raise CommandError(problems) from None
        app = application_get_or_create(name=(application or name).strip())
        key, raw = api_key_create(name=name, application=app, **asdict(limits))
        shown = ", ".join(label.format(value) for label, value in (
            ("{} requests/min", limits.requests_per_minute), ("{} tokens/min", limits.tokens_per_minute),
            ("${} a day", limits.daily_budget), ("${} a month", limits.monthly_budget)) if value is not None)
        self.stderr.write(f"Created key {key.prefix}… for application {app.name!r}"
                          + (f" (limits: {shown})" if shown else "")
                          + ". It is shown once; store it now.")
        self.stdout.write(raw)
