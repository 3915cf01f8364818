"""The daemon's wiring: the service that joins the stages, the state machine, request payloads, the
state store and systemd notification.
"""
