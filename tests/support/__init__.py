"""Helpers shared by the service's tests (not tests themselves)."""
