"""Alerts: tell a person about a rollback, drift, a failed training or checks gate, a rejected promotion.

``alerts`` is pure (no Airflow): the channel config validator and the message builder. ``channels`` is the Airflow
side: the notifiers that deliver an alert (log, JSONL file, SNS, Slack, SMTP), ``emit_alert`` for operators and
``AlertOnFailure`` for ``on_failure_callback``. Importing this package imports neither.
"""
