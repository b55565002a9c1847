"""The admin console (server-rendered pages)."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the console's pages on the app."""
