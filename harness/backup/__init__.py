"""Backups of the lab's data to S3 and restore drills: logical dumps (`dump`), point-in-time recovery from base
backups and the WAL archive (`pitr`)."""

from harness.backup.dump import *  # noqa: F401,F403
from harness.backup.dump import __all__ as _dump_all

__all__ = list(_dump_all)
