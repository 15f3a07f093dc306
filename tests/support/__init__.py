"""Shared helpers for the test suite (servers, SMTP sink, polling)."""
