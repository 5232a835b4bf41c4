"""The one redaction of secret values (by value, not by key) in nested JSON-like data and in text."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

#: What a secret is replaced with.
REDACTED = "***"

#: Secrets shorter than this are ignored: replacing "1", "no" or "abc" everywhere would mangle ordinary
#: words and numbers in the report without protecting anything (and "***" cannot contain a 4+ char secret).
MIN_SECRET_LEN = 4


def secret_values(secrets: Any) -> list[str]:
    """Every leaf of a (nested) secrets mapping as a string, e.g. Chaos Toolkit's {"scope": {"key": "value"}}."""
    out: list[str] = []
    if isinstance(secrets, Mapping):
        for v in secrets.values():
            out.extend(secret_values(v))
    elif isinstance(secrets, (list, tuple, set, frozenset)):
        for v in secrets:
            out.extend(secret_values(v))
    elif secrets is not None and not isinstance(secrets, bool):
        out.append(str(secrets))
    return out


def normalise_secrets(secrets: Iterable[Any] | None) -> tuple[str, ...]:
    """Distinct secret strings of at least MIN_SECRET_LEN characters, longest first (a longer secret wins over
    a secret it contains)."""
    seen = {str(s) for s in (secrets or ()) if s is not None and not isinstance(s, bool)}
    return tuple(sorted((s for s in seen if len(s) >= MIN_SECRET_LEN), key=lambda s: (-len(s), s)))


def _text(s: str, values: tuple[str, ...]) -> str:
    for v in values:
        if v in s:
            s = s.replace(v, REDACTED)
    return s


def redact_text(text: str, secrets: Iterable[Any] | None) -> str:
    """`text` with every occurrence of every secret replaced by REDACTED."""
    values = normalise_secrets(secrets)
    return _text(text, values) if values else text


def redact(obj: Any, secrets: Iterable[Any] | None) -> Any:
    """A copy of `obj` with secret values replaced inside every string (dict keys included).

    Walks mappings, lists, tuples and sets (sets come back as sorted lists: JSON has no set). Only
    strings are rewritten: numbers, booleans and None are returned unchanged, so a secret that happens
    to read "3600" never turns `rto_target_s: 3600` into "***". The input is never modified; with no
    (long enough) secrets `obj` itself is returned.
    """
    values = normalise_secrets(secrets)
    if not values:
        return obj
    return _walk(obj, values)


def _walk(o: Any, values: tuple[str, ...]) -> Any:
    if isinstance(o, str):
        return _text(o, values)
    if isinstance(o, Mapping):
        return {(_text(k, values) if isinstance(k, str) else k): _walk(v, values) for k, v in o.items()}
    if isinstance(o, list):
        return [_walk(v, values) for v in o]
    if isinstance(o, tuple):
        return tuple(_walk(v, values) for v in o)
    if isinstance(o, (set, frozenset)):
        return [_walk(v, values) for v in sorted(o, key=repr)]
    return o
