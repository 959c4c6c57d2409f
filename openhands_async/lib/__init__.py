"""Hand-written helpers on top of the resources: streaming start, poller, batch runner."""
