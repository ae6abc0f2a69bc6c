"""MSMT Broker server."""
