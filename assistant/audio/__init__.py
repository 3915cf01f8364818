"""Sound in and out: the PortAudio owner (devices), voice activity (vad), the wake word, and the
listener that turns microphone frames into requests.
"""
