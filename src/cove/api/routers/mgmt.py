"""Management endpoints for administrators: every project's instances, quotas."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
