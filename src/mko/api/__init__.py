"""The REST API under ``/api``: one router per domain in :mod:`mko.api.routes`."""
