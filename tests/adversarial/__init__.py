"""Attacks on a live `lipstream serve`, one module per class of attack (docs/security.md)."""
