"""Transports: thin gRPC and WebSocket front ends over the engines (no torch here)."""
