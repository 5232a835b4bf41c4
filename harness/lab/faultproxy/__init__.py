"""Fault proxy of the lab: a Toxiproxy-compatible TCP proxy and HTTP API written on asyncio."""

from __future__ import annotations

TOXIPROXY_VERSION = "2.12.0"
"""The Toxiproxy release whose HTTP API this server speaks (reported by `GET /version`)."""

__all__ = ["TOXIPROXY_VERSION"]
