"""A voice assistant daemon for single-board computers, driven by speech and MQTT."""

__version__ = "0.1.0"
