"""Home Assistant as the daemon knows it: entities and their registry, discovery, topic ownership,
command payloads, the service bridge, and the daemon's own announcement.
"""
