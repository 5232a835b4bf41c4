"""Kubernetes target: probes (deployment readiness, pods and nodes ready) and actions (scale with rollback, cordon, delete a pod) through the environment's Kubernetes API."""
