"""The server-rendered web UI over the same services as the API: one page module per topic in
:mod:`mko.web.pages`, the login pages, forms, Jinja templates and static files."""
