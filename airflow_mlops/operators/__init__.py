"""Thin Airflow shells over the core: translate context, templating and deferral; no business logic."""
