"""The only layer that touches archive storage."""
