"""The seed database import and the safe upgrade, until they move (issue 19)."""
