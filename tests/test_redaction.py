"""Optional PII redaction of stored prompt text (`GATEWAY_REDACT_PII`, routing/redaction.py).

Unit: each kind of personal data and secret is replaced; look-alikes that fail their checksum
(Luhn, IBAN mod-97) or their range (IPv4 octets) are kept, and so is ordinary text. Stored rows:
with the setting on, judge audit samples and shadow captures keep no PII; with it off (the
default) they keep the prompt exactly as sent.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.utils import timezone
from hypothesis import given, settings as hsettings, strategies as st

from routing.redaction import iban_valid, luhn_valid, redact, redact_for_storage


def fake_secret(prefix: str, length: int = 24, *, upper: bool = False) -> str:
    """A random key-shaped string made at run time: no key-like literal is kept in the repository."""
    body = secrets.token_hex(length)[:length]
    return prefix + (body.upper() if upper else body)


OPENAI_LIKE = fake_secret("sk-proj-")
ANTHROPIC_LIKE = fake_secret("sk-ant-api03-")
GATEWAY_LIKE = fake_secret("rgw_" + secrets.token_hex(4) + "_")
AWS_LIKE = fake_secret("AKIA", 16, upper=True)
GOOGLE_LIKE = fake_secret("AIza", 35)

PII_PROMPT = ("I'm jane.doe@example.com, card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, "
              "call me on +44 20 7946 0958, my server is 10.0.12.7 and my key is "
              f"{OPENAI_LIKE}. What is the capital of Peru?")
PII = ["jane.doe@example.com", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "+44 20 7946 0958",
       "10.0.12.7", OPENAI_LIKE]


@pytest.mark.parametrize("text, expected", [
    ("write to jane.doe+news@mail.example.co.uk today", "write to [EMAIL] today"),
    ("card 4111 1111 1111 1111.", "card [CARD]."),
    ("card 5555-5555-5555-4444", "card [CARD]"),
    ("amex 378282246310005", "amex [CARD]"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [IBAN]"),
    ("IBAN GB82WEST12345698765432", "IBAN [IBAN]"),
    ("from 192.168.1.20 to 8.8.8.8", "from [IP] to [IP]"),
    ("ring +1-202-555-0173 or (555) 123-4567 or 020 7946 0958", "ring [PHONE] or [PHONE] or [PHONE]"),
    (f"OPENAI_API_KEY={OPENAI_LIKE}", "OPENAI_API_KEY=[SECRET]"),
    (f"x-api-key: {ANTHROPIC_LIKE}", "x-api-key: [SECRET]"),
    (f"use {GATEWAY_LIKE} please", "use [SECRET] please"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abcdefghijklmnop", "Authorization: [SECRET]"),
    (f"aws {AWS_LIKE}", "aws [SECRET]"),
    (f"gemini {GOOGLE_LIKE}", "gemini [SECRET]"),
])
def test_each_kind_of_pii_and_secret_is_replaced(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "order 4111 1111 1111 1112 (fails Luhn)",
    "IBAN GB00 WEST 1234 5698 7654 32 has wrong check digits",
    "version 999.1.1.1 is not an address, nor is 1.2.3.4.5",
    "in 2024 we sold 1500000 units at 3.14159 each; 2+2=4",
    "What is the capital of Peru? Explain recursion in Python with an example.",
    "def f(x): return x @ w  # matrix product",
    "sk-short is not a key",
])
def test_look_alikes_and_ordinary_text_are_kept(text):
    assert redact(text) == text


def test_the_checksums_are_the_real_ones():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB83WEST12345698765432")


@hsettings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_redaction_is_idempotent_and_never_grows_personal_data(text):
    once = redact(text)
    assert redact(once) == once


@hsettings(max_examples=200, deadline=None)
@given(prefix=st.text(alphabet="abc .,!?\n", max_size=20), suffix=st.text(alphabet="abc .,!?\n", max_size=20),
       user=st.from_regex(r"[a-z][a-z0-9._]{0,10}", fullmatch=True), digits=st.lists(
           st.integers(0, 9), min_size=15, max_size=15))
def test_an_email_or_a_valid_card_never_survives_in_any_context(prefix, suffix, user, digits):
    body = "".join(map(str, digits))
    check = next(d for d in "0123456789" if luhn_valid(body + d))
    card = " ".join((body + check)[i:i + 4] for i in range(0, 16, 4))
    out = redact(f"{prefix}{user}@example.org{suffix} {card}{suffix}")
    assert "@example.org" not in out and card not in out


def test_redact_for_storage_follows_the_setting(settings):
    settings.GATEWAY_REDACT_PII = False
    assert redact_for_storage(PII_PROMPT) == PII_PROMPT
    settings.GATEWAY_REDACT_PII = True
    assert all(p not in redact_for_storage(PII_PROMPT) for p in PII)
    assert "What is the capital of Peru?" in redact_for_storage(PII_PROMPT)


def test_the_setting_is_off_by_default():
    from config.settings import quality

    assert quality.GATEWAY_REDACT_PII is False


# ---- stored rows ------------------------------------------------------------------------------------

def record(policy_version_id=None):
    return SimpleNamespace(request_id=uuid.uuid4(), route="simple_qa", executor_model="claude-haiku-4-5",
                           confidence=0.9, policy_version_id=policy_version_id, status="ok")


def store_both(policy_version_id: int, experiment_id: int, candidate_id: int):
    from audits.models import AuditSample, ShadowCapture
    from audits.sampling import ShadowTarget, sample_store, shadow_capture_store

    row = record(policy_version_id)
    assert sample_store(record=row, prompt=PII_PROMPT, answer=f"Noted, {PII[0]}. Lima.", probability=1.0)
    now = timezone.now()
    target = ShadowTarget(experiment_id=experiment_id, candidate_id=candidate_id, rate=1.0,
                          window_start=now - timedelta(hours=1), window_end=now + timedelta(hours=1))
    assert shadow_capture_store(target=target, record=row, prompt=PII_PROMPT)
    return AuditSample.objects.get(request_id=row.request_id), ShadowCapture.objects.get(request_id=row.request_id)


@pytest.fixture
def experiment_with_own_sentinel(catalog):
    """A shadow experiment whose candidate asks its own sentinel (so the capture keeps the prompt)."""
    from audits.models import ShadowExperiment
    from audits.selectors import active_policy_version
    from routing.models import PolicyVersion

    active = active_policy_version()
    candidate = PolicyVersion.objects.create(number=active.number + 1, status="draft",
                                             sentinel_prompt_version="v0-redaction-test")
    now = timezone.now()
    experiment = ShadowExperiment.objects.create(name="redaction", candidate=candidate, sample_rate=Decimal("1"),
                                                 window_start=now - timedelta(hours=1),
                                                 window_end=now + timedelta(days=1), status="running")
    return active, experiment


@pytest.mark.django_db
def test_with_redaction_on_no_pii_is_stored_in_samples_or_captures(settings, experiment_with_own_sentinel):
    settings.GATEWAY_REDACT_PII = True
    active, experiment = experiment_with_own_sentinel
    sample, capture = store_both(active.pk, experiment.pk, experiment.candidate_id)
    assert capture.needs_sentinel and capture.prompt
    for stored in (sample.prompt, sample.answer, capture.prompt):
        for value in PII:
            assert value not in stored, (value, stored)
    assert "What is the capital of Peru?" in sample.prompt and "[EMAIL]" in sample.answer


@pytest.mark.django_db
def test_with_redaction_off_the_prompt_is_stored_as_sent(settings, experiment_with_own_sentinel):
    settings.GATEWAY_REDACT_PII = False
    active, experiment = experiment_with_own_sentinel
    sample, capture = store_both(active.pk, experiment.pk, experiment.candidate_id)
    assert sample.prompt == PII_PROMPT and capture.prompt == PII_PROMPT
