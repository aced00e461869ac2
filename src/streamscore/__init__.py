"""streamscore: real-time ML scoring of event streams."""

__version__ = "0.1.0"
