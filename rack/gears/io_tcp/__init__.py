"""Built-in gear `io_tcp`: a TCP/TLS server or client, one message per frame.

config.py      the config model (validation, JSON schema, docs)
framing.py     bulk framing: delimiter, 2/4-byte length prefix
connection.py  the asyncio.Protocol of one connection (hot path, back-pressure)
endpoint.py    connection table, replies, drain, stop (shared by both modes)
server.py      listening socket, accept loop, connection limit, idle sweep
client.py      dialer with reconnect back-off
tls.py         SSL contexts from the tls config
gear.py        the Gear itself
"""

from .config import TcpConfig, TlsConfig
from .connection import Connection
from .gear import TcpGear

__all__ = ["Connection", "TcpConfig", "TcpGear", "TlsConfig"]
