"""Fixtures of the integration tests (the private servers live in tests/conftest.py)."""

from guesthost import host

__all__ = ["host"]
