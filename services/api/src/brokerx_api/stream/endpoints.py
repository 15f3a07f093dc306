"""HTTP endpoints of the stream domain."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
