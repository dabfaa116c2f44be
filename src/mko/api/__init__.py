"""The REST API (FastAPI) and the web UI, served by ``mko serve``."""

from mko.api.app import create_app

__all__ = ["create_app"]
