"""Code that runs inside a step's pod or process. Never imports Airflow; heavy imports stay inside functions."""
