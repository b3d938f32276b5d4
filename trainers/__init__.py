"""Preference-optimization losses and the one training loop they share."""
