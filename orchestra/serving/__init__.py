"""The serving layer, free of Ray: the HTTP contract and envelope, authentication, rate-limit headers,
the WebSocket protocol, metrics and the gateway the Serve ingress routes call."""
