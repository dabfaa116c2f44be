"""The node's own network card, over SSH: MAC collection, NIC Wake-on read/enable/disable with
persistence, and the Ansible side (the inventory written inert, facts imported back)."""
