"""The safety layer below targets and failover: the fault guard, the durable fault ledger and the run context."""
