"""A dependency-free sd_notify: READY=1, STATUS=..., WATCHDOG=1, RELOADING=1, STOPPING=1."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one notification to systemd; a no-op (False) outside a notify service."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True
