"""Drill orchestration: sessions, profiles, Chaos Toolkit control, fault ledger, guard chain, calibration."""
