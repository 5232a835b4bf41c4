"""The lab's status page: service status derived from real probes through the global endpoint, and incidents."""
