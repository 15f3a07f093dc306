"""Logging, metrics, health checks and heartbeats shared by every service."""
