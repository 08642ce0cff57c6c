"""The cloud side of the sync: ``hygie-sync-server`` (Litestar + MongoDB), the
teletransmission relay and the simulated insurance gateway."""
