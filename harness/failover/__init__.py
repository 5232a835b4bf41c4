"""Failover: the region fault, the recovery runbook in catalog order, failback, and the disaster-level detector."""
