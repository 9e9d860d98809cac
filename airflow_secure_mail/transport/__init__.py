"""The only layer that opens SMTP sockets."""
