"""Baselines that the load generator (``bench/``) measures the presence app against; never imported by the app."""
