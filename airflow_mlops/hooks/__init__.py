"""Hooks: all I/O with outside systems (MLflow, artifact store, Airflow Variables)."""
