"""The MQTT link: the paho client handed to the event loop, the inbox that puts requests first, and
truthful delivery of device commands.
"""
