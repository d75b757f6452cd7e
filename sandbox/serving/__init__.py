"""Model serving, whatever the profile: the model server, the A/B router, payloads, specs, the inference log."""
