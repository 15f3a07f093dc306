"""HTTP endpoints of the marketdata domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
