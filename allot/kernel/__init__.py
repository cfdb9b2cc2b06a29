"""Shared plumbing every context stands on: database, unit of work, events, timers, errors, web."""
