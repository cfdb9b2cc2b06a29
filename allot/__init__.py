"""Allot: take incoming work in, route it to the right person, carry it through its life."""

__version__ = "0.1.0"
