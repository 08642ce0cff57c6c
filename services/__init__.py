"""Domain services, one package each, mounted by the composition root (``appliance.registry``)."""
