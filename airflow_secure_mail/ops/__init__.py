"""The operator's side of the mail path: was a mail ours (verify), what went out and what was refused (trace),
an emergency stop and a correction notice (incident), the weekly security report. Reads archive metadata only."""
