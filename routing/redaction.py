"""Optional PII redaction of prompt text before it is stored (judge audit samples, shadow captures).

Off by default; `GATEWAY_REDACT_PII=1` turns it on. Only *stored* copies are redacted: the
request itself is routed and answered on the text the client sent.

What is replaced, each by a typed placeholder (`[EMAIL]`, `[CARD]`, ...):
1. secrets that look like API keys or tokens (`sk-…`, `sk-ant-…`, `rgw_…`, `AIza…`, `ghp_…`,
   `xox?-…`, AWS access key ids, `Bearer …`) — first, so that no later rule splits them;
2. email addresses;
3. IBANs whose mod-97 check digits are right;
4. card numbers (13-19 digits, spaces or dashes allowed) that pass the Luhn check — order numbers
   and other long digit runs that fail it are kept;
5. IPv4 addresses (every octet 0-255);
6. phone numbers: an optional `+` country code and 7-15 digits with the usual separators, when
   written like a phone number (a leading `+`, parentheses or separators), not bare integers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf import settings

SECRET = re.compile(
    r"""(?x)
    \b(?:
        sk-(?:proj-|ant-(?:api\d+-)?|live-|test-)?[A-Za-z0-9_\-]{16,}   # OpenAI / Anthropic style
      | rgw_[0-9a-f]{8}_[A-Za-z0-9_\-]{16,}                              # this gateway's keys
      | AIza[0-9A-Za-z_\-]{30,}                                          # Google API keys
      | gh[pousr]_[A-Za-z0-9]{30,}                                       # GitHub tokens
      | xox[abprs]-[A-Za-z0-9\-]{10,}                                    # Slack tokens
      | (?:AKIA|ASIA)[0-9A-Z]{16}                                        # AWS access key ids
    )
    | (?i:\bbearer\s+)[A-Za-z0-9._~+/\-]{20,}=*                          # bearer tokens
    """
)
EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ \-]?\d){12,18}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
PHONE = re.compile(
    r"""(?x)
    (?<![\w+])(?<!\d[ .\-])                   # not the tail of a longer digit run
    (?:
        \+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){1,4}   # +44 20 7946 0958
      | \(\d{2,4}\)[ .\-]?\d{3,4}[ .\-]?\d{3,4}                                # (555) 123-4567
      | \d{3,4}[ .\-]\d{3,4}[ .\-]\d{3,4}                                      # 555-123-4567
    )
    (?![\w])(?![ .\-]\d)                      # nor its head
    """
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    text = candidate.replace(" ", "")
    if not 15 <= len(text) <= 34:
        return False
    rearranged = text[4:] + text[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


def _iban(match: re.Match[str]) -> str:
    return "[IBAN]" if iban_valid(match.group()) else match.group()


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[PHONE]" if 7 <= len(digits) <= 15 else match.group()


RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]] = [
    (SECRET, "[SECRET]"),
    (EMAIL, "[EMAIL]"),
    (IBAN, _iban),
    (CARD, _card),
    (IPV4, "[IP]"),
    (PHONE, _phone),
]


def redact(text: str) -> str:
    """`text` with the personal data and secrets above replaced by placeholders."""
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return text


def redact_for_storage(text: str) -> str:
    """What to store for a prompt or an answer: redacted when `GATEWAY_REDACT_PII` is on."""
    if not text or not getattr(settings, "GATEWAY_REDACT_PII", False):
        return text
    return redact(text)
