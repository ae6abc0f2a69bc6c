"""MSMT agency client: seal, submit, receive and open sanctions-monitoring reports."""

__version__ = "0.1.0"
