"""Notifications through apprise: URL validation and encryption, delivery off the event loop, and the
messages for rules, schedules and UPS events."""
