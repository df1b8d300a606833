"""Issue 3: decision-row fields for the input guard, the decision cache, the local/tiered
sentinel and the speculative/chained execution modes."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial")]

    operations = [
        migrations.AlterField(
            model_name="decision",
            name="sentinel_kind",
            field=models.CharField(help_text="llm, local, tiered-local, tiered-llm, cache, bypass", max_length=16),
        ),
        migrations.AddField(
            model_name="decision",
            name="guard_flags",
            field=models.JSONField(blank=True, default=list, help_text="Input-guard findings (routing attacks)."),
        ),
        migrations.AddField(
            model_name="decision",
            name="cache_hit",
            field=models.BooleanField(default=False, help_text="The decision came from the decision cache."),
        ),
        migrations.AddField(
            model_name="decision",
            name="sentinel_calls_saved",
            field=models.PositiveSmallIntegerField(default=0, help_text="Sentinel calls a cache hit avoided."),
        ),
        migrations.AddField(
            model_name="decision",
            name="local_decision",
            field=models.JSONField(blank=True, null=True, help_text="The local classifier's decision and probabilities."),
        ),
        migrations.AddField(
            model_name="decision",
            name="served_path",
            field=models.CharField(
                default="plain", max_length=24,
                help_text="plain, speculative, speculative_cancelled, speculative_failed, chained, chained_fallback",
            ),
        ),
        migrations.AddField(
            model_name="decision",
            name="speculative_waste_tokens",
            field=models.PositiveIntegerField(default=0, help_text="Tokens of a cancelled speculative call."),
        ),
        migrations.AddField(
            model_name="decision",
            name="speculative_waste_cost",
            field=models.DecimalField(decimal_places=10, default=0, max_digits=24,
                                      help_text="Cost of a cancelled speculative call (included in cost)."),
        ),
    ]
