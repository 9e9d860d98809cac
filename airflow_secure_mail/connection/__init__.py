"""One ``securesmtp`` connection: its fields and settings, its credentials from Vault, and the client that
opens verified sessions and delivers over them (:class:`~airflow_secure_mail.connection.client.SmtpClient`).

Free of the hook: the pipeline delivers through the client, and the hook is the client's Airflow face.
"""
