"""Keel MCP plugin."""
