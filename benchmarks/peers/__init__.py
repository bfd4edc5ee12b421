"""Other model servers the service is measured against, each in a virtual environment of its own."""
