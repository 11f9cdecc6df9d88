"""Sensors: wait for registry (and later rollout) conditions, deferrable by default."""
