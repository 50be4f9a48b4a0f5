"""Bridges from recgym environments to other training libraries (``recgym.integrations.trl``)."""
