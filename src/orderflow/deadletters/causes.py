"""A dead letter's cause: a stable fingerprint of what went wrong, for grouping (pure)."""

from __future__ import annotations

import re

_PATTERNS = [
    (re.compile(r"\b(ORD|CUS)-\d+\b"), r"\1-…"),
    (re.compile(r"\b(bp_shp|bp_evt|pay|re)_[0-9a-zA-Z]+\b"), r"\1_…"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "…"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T][\d:.]+(Z|[+-]\d\d:\d\d)?( UTC)?"), "<time>"),
]


def fingerprint(step: str, error_class: str | None, error: str | None) -> str:
    """'book · permanent · Bob's Post POST /v1/shipments: HTTP 422: unknown country' and the
    like: ids, references and times are blanked so that one cause groups many orders."""
    text = (error or "no error recorded").strip().splitlines()[0][:300]
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return f"{step} · {error_class or 'unknown'} · {text}"
