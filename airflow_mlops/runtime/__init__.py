"""Where a step runs: ``local`` (a subprocess) or ``kubernetes`` (a pod, or an Indexed Job for N workers)."""
