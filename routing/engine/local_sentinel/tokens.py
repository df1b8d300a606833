"""Fast token counting and id extraction for the local sentinel.

Counts use the real WordPiece tokenizer (all-MiniLM-L6-v2's `tokenizer.json`, via the
HF `tokenizers` package). Tokenizing costs time linear in the text, so huge inputs are
not tokenized whole:

1. up to `exact_chars` characters the whole text is tokenized and the count is exact;
2. beyond that, a head window and a tail window of `window_chars` characters each are
   tokenized; their ids feed the classifier and their tokens-per-character ratio,
   times the full length, estimates the count (`exact=False`). The error on English
   prose and code is a few percent (see docs/SENTINEL.md), far inside the margin of the
   long-context threshold.

Speed: the Rust tokenizer costs about 1 µs per character here, too slow for a 5 ms
budget at 2,000 tokens. So text is split in Python at whitespace and ASCII punctuation
(after lower-casing), boundaries where BERT always splits, and each
distinct pre-token's WordPiece ids are cached per `TokenCounter`; only cache misses go
to the real tokenizer, in one batch. The cache starts with every whole-word vocabulary
entry and is reset when it grows past `max_cache` entries. The ids equal the tokenizer's
own (checked against every prompt in data/sentinel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain

import numpy as np
from tokenizers import Tokenizer

EXACT_CHARS = 24_000
WINDOW_CHARS = 6_000
MAX_CACHE = 500_000
# Split where BERT always splits: whitespace and ASCII punctuation (each its own token).
# Anything subtler (Unicode punctuation, CJK) stays inside a piece and the real
# tokenizer splits it when that piece is first seen, so the ids stay exact.
PIECES = re.compile(r"[^\s!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


@dataclass(frozen=True)
class Tokens:
    ids: np.ndarray  # int64 token ids the classifier sees (head and tail windows for huge inputs)
    count: int  # tokens in the whole text (exact or estimated)
    exact: bool


def load_tokenizer(tokenizer_json: str) -> Tokenizer:
    """Build a tokenizer from JSON text with padding and truncation switched off."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class TokenCounter:
    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        exact_chars: int = EXACT_CHARS,
        window_chars: int = WINDOW_CHARS,
        max_cache: int = MAX_CACHE,
    ) -> None:
        self.tokenizer = tokenizer
        self.exact_chars = exact_chars
        self.window_chars = window_chars
        self.max_cache = max_cache
        self._base = {
            word: [i]
            for word, i in tokenizer.get_vocab().items()
            if not word.startswith("##") and not word.startswith("[")
        }
        self._cache: dict[str, list[int]] = dict(self._base)

    def _ids(self, text: str) -> list[int]:
        pieces = PIECES.findall(text.lower())
        cache = self._cache
        try:
            return list(chain.from_iterable(map(cache.__getitem__, pieces)))
        except KeyError:
            pass
        missing = sorted({p for p in pieces if p not in cache})
        if len(cache) + len(missing) > self.max_cache:
            self._cache = cache = dict(self._base)
        for piece, encoding in zip(missing, self.tokenizer.encode_batch(missing, add_special_tokens=False)):
            cache[piece] = encoding.ids
        return list(chain.from_iterable(map(cache.__getitem__, pieces)))

    def tokens(self, text: str) -> Tokens:
        if len(text) <= self.exact_chars:
            ids = self._ids(text)
            return Tokens(np.asarray(ids, dtype=np.int64), len(ids), True)
        head_text = text[: self.window_chars]
        tail_text = text[-self.window_chars :]
        head, tail = self._ids(head_text), self._ids(tail_text)
        per_char = (len(head) + len(tail)) / max(1, len(head_text) + len(tail_text))
        count = max(len(head) + len(tail), round(per_char * len(text)))
        return Tokens(np.asarray(head + tail, dtype=np.int64), count, False)

    def count(self, text: str) -> int:
        return self.tokens(text).count
