"""Server-rendered web pages over the same services as the API."""

from mko.web.pages import STATIC_DIR, router

__all__ = ["STATIC_DIR", "router"]
