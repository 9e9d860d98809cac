"""``python -m airflow_secure_mail.cli``."""

import sys

from airflow_secure_mail.cli.main import main

sys.exit(main())
