"""The REST API's routes, one module per domain, each with its own router: a route parses, calls a
service and returns a public model."""
