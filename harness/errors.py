"""Error hierarchy of the harness: one root, each error carries its documented exit code."""

from __future__ import annotations


class ExitCode:
    """Exit codes of the `drill` command (docs/CONTRACTS.md, "Exit codes")."""

    PASSED = 0
    HARNESS_ERROR = 1
    USAGE = 2
    OBJECTIVES_MISSED = 3
    INTEGRITY_VIOLATION = 4
    REFUSED_BY_SAFETY = 5
    INTERRUPTED = 130


class HarnessError(Exception):
    """Root of every error the harness raises on purpose; the message is one line."""

    exit_code = ExitCode.HARNESS_ERROR


class UsageError(HarnessError):
    """Bad input: an unknown target, a malformed file, a bad option value."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A configuration file or value is invalid."""


class LabError(HarnessError):
    """The embedded lab could not be started, reached or stopped."""


class SafetyRefusal(HarnessError):
    """A guard refused to inject a fault (allow-list, approval gate, blast radius)."""

    exit_code = ExitCode.REFUSED_BY_SAFETY


class Interrupted(HarnessError):
    """The run was interrupted by SIGINT or SIGTERM (rollbacks have run)."""

    exit_code = ExitCode.INTERRUPTED
