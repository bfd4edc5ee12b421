"""Hand-written servers that answer the same contract as the BentoML service, for comparison."""
