"""Scanners that judge a message's parts over a socket before it is sent: clamd (INSTREAM) today.

Below ``mail/``: a ``MailPolicy`` holds a scanner, and the scanner knows nothing of messages beyond the
named parts it is given.
"""
