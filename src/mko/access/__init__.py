"""Who may do what: users and their roles, API tokens, web sessions, login throttling and the audit
of authentication events."""
