"""What mko manages: clusters, nodes, Proxmox hosts, their schemas, power settings, SSH host-key
trust, network discovery, and the import of the seed's database."""
