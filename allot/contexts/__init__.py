"""Bounded contexts. Each one owns its tables; others use only its package `__init__` or events."""
