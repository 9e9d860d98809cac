"""Pure message handling: compose, screen, protect. No network, no storage."""
