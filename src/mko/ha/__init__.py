"""High availability on PostgreSQL: which ``mko serve`` instance leads, and failover of what dead
instances left running."""
