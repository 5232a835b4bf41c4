"""Redaction of secret values (by value, not by key) in nested JSON-like data and in text."""

from __future__ import annotations

from typing import Any, Iterable

_MASK_CANDIDATES = ("***", "[redacted]", "###", "xxx")
_MIN_AUTO_SECRET_LEN = 4


def normalise_secrets(secrets: Iterable[Any]) -> tuple[str, ...]:
    """Distinct non-empty secret strings, longest first (so a longer secret wins over its prefix)."""
    seen = {str(s) for s in (secrets or ()) if s is not None and str(s) != ""}
    return tuple(sorted(seen, key=lambda s: (-len(s), s)))


def mask_for(secrets: Iterable[str]) -> str:
    """The replacement text: one that contains none of the secrets (else it would leak them back)."""
    values = tuple(secrets)
    for mask in _MASK_CANDIDATES:
        if not any(s in mask for s in values):
            return mask
    return "\u2588" * 3  # block characters: no realistic secret is made of these


def redact_text(text: str, secrets: Iterable[Any]) -> str:
    """`text` with every occurrence of every secret replaced by the mask."""
    values = normalise_secrets(secrets)
    if not values:
        return text
    mask = mask_for(values)
    for s in values:
        text = text.replace(s, mask)
    return text


def redact(obj: Any, secrets: Iterable[Any]) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings) with secret values masked in keys and values.

    Non-string scalars are returned unchanged; the input is never modified.
    """
    values = normalise_secrets(secrets)
    if not values:
        return obj
    mask = mask_for(values)

    def text(s: str) -> str:
        for v in values:
            if v in s:
                s = s.replace(v, mask)
        return s

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return text(o)
        if isinstance(o, dict):
            return {(text(k) if isinstance(k, str) else k): walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, tuple):
            return tuple(walk(v) for v in o)
        if isinstance(o, (set, frozenset)):
            return [walk(v) for v in sorted(o, key=repr)]
        return o

    return walk(obj)


def journal_secret_values(journal: Any) -> list[str]:
    """Literal secret values declared inline in a Chaos Toolkit journal's experiment `secrets` block.

    Secrets given as `{"type": "env", "key": ...}` or `{"type": "vault", ...}` are references, not
    values, and are skipped; the resolved values must be passed by the caller.  Literals shorter
    than four characters are skipped too.
    """
    found: list[str] = []
    if not isinstance(journal, dict):
        return found
    experiment = journal.get("experiment")
    block = experiment.get("secrets") if isinstance(experiment, dict) else None
    if not isinstance(block, dict):
        return found
    for scope in block.values():
        if not isinstance(scope, dict):
            continue
        for value in scope.values():
            # very short literals ("1", "no") would mask ordinary words everywhere: skip them
            if isinstance(value, str) and len(value) >= _MIN_AUTO_SECRET_LEN:
                found.append(value)
    return found
