"""Authentication target: the app's JWT signing keys and Redis sessions. Probes (is a token accepted by every
replica, sessions in Redis, security audit entries, each replica's key ring) and actions (the "signing key
compromised" fault, the key rotation that answers it)."""
