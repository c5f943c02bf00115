"""influx-gateway: a write gateway for InfluxDB clusters."""

from __future__ import annotations

__version__ = "0.1.0"
