"""What the API and the web share: typed dependencies, authentication and roles (bearer tokens and the
web session with CSRF), the route class, request hardening, error handlers, background power
actions, live-read rate limiting, the leader's duties and the ``/metrics`` read model."""
