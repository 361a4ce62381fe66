"""Traffic models: how clients see the ready endpoint set (service, ingress, registry)."""
