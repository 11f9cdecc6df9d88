"""Pure logic: specs, manifests and decisions. No Airflow, no I/O clients; unit-tested on its own."""
