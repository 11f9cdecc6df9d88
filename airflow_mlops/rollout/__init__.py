"""Progressive rollout I/O: targets (where traffic is shifted) and analysis providers (where metrics come from)."""
