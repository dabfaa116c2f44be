"""One module per power driver; each implements only its primitives (on, off, query), and
:mod:`mko.power.base` owns retries and verification."""
