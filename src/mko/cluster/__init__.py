"""Cluster power in the order MicroK8s needs: the shutdown plan, the graceful or forced shutdown run,
the verified recovery, and the outage record that survives mko's own power cut."""
