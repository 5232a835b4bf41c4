"""Secrets for the report files: the core redaction (harness.core.redact) plus Chaos Toolkit journal literals."""

from __future__ import annotations

from typing import Any

from harness.core.redact import MIN_SECRET_LEN, REDACTED, normalise_secrets, redact, redact_text, secret_values

__all__ = ["MIN_SECRET_LEN", "NOT_SECRET_KEYS", "REDACTED", "journal_secret_values", "normalise_secrets", "redact", "redact_text",
           "secret_values"]


#: keys of an experiment's secrets block that name something rather than hide it (chaostoolkit-kubernetes: the
#: kubeconfig context, e.g. "primary"): never redacted, or every mention of that region would be
NOT_SECRET_KEYS = frozenset({"KUBERNETES_CONTEXT"})


def journal_secret_values(journal: Any) -> list[str]:
    """Literal secret values declared inline in a Chaos Toolkit journal's experiment `secrets` block.

    Secrets given as `{"type": "env", "key": ...}` or `{"type": "vault", ...}` are references, not
    values, and are skipped; the resolved values must be passed by the caller. Literals shorter than
    MIN_SECRET_LEN characters are skipped too (the core redaction ignores them anyway).
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
        for key, value in scope.items():
            if key not in NOT_SECRET_KEYS and isinstance(value, str) and len(value) >= MIN_SECRET_LEN:
                found.append(value)
    return found
