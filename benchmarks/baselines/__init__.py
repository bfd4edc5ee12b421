"""Hand-written servers that answer the BentoML service's own contract, for comparison."""
