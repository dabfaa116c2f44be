"""The web UI's pages, one module per topic, each with its own router."""
