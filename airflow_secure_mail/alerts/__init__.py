"""Alert digests: Alertmanager-style grouping, throttling, inhibition and silences for Airflow alert mail."""
