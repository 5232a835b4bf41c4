"""S3 target (probes only): the backups bucket's objects."""
