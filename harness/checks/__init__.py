"""Data integrity checks: set-based SQL over the K-ERP database, returning pass/fail/warning results."""
