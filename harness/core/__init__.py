"""Pure core: domain model, timeline, measurements, checks and safety decisions (standard library only)."""
