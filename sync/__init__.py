"""Offline-first replication: outbox, sync agent and the cloud sync service (sync issue)."""
