"""Triggers: deferrable waits that run in the triggerer."""
