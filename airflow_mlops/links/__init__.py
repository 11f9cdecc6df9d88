"""Operator extra links shown in the Airflow UI."""
