"""Report writers: report.json, report.md, report.html, junit.xml and the redacted Chaos Toolkit journal."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from .htmlpage import render_html
from .junit import render_junit
from .markdown import render_markdown
from .model import build_view, verdict
from .redact import journal_secret_values, normalise_secrets, redact, redact_text

__all__ = ["write_report", "redact", "redact_text", "render_markdown", "render_html", "render_junit", "verdict"]


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; reports are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: Mapping[str, Any], out_dir: Path, *, journal: Mapping[str, Any] | None = None,
                 secrets: Iterable[str] = (), lang: str | None = None) -> dict[str, Path]:
    """Write report.json, report.md, report.html, junit.xml (and journal.json when given) into `out_dir`.

    report.md and report.html are written in `lang` (en, the default, or ko); report.json never changes with it.

    Secret values are redacted from every file: the given `secrets` plus literal values in the
    journal's experiment `secrets` block. Returns {"json", "md", "html", "junit"[, "journal"]} -> path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values = normalise_secrets(list(secrets or ()) + journal_secret_values(journal))
    safe = redact(dict(report), values)
    view = build_view(safe, lang)

    texts = {
        "json": ("report.json", _dump_json(safe)),
        "md": ("report.md", render_markdown(safe, view=view)),
        "html": ("report.html", render_html(safe, view=view)),
        "junit": ("junit.xml", render_junit(safe)),
    }
    if journal is not None:
        texts["journal"] = ("journal.json", _dump_json(redact(dict(journal), values)))

    paths: dict[str, Path] = {}
    for key, (name, text) in texts.items():
        # second pass over the final text: catches a secret only formed by rendering (never expected)
        if key not in ("json", "journal"):
            text = redact_text(text, values)
        path = out_dir / name
        _write_atomic(path, text)
        paths[key] = path
    return paths
