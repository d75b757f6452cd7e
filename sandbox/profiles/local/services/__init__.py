"""One module per local service; each starts a real server and probes it with a real request."""
