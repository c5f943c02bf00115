"""lineprotocol."""
