"""Cove: a Database-as-a-Service control plane speaking the Trove v1.0 API."""

__version__ = "0.1.0"
