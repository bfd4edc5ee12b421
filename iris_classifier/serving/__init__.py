"""What the running service needs and nothing from training: HTTP layers, logging, shutdown."""
