"""The network service: WebSocket protocol, HTTP API, demo page, metrics."""
