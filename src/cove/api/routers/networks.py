"""Networks instances can attach to (a Cove extension of the v1.0 API)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
