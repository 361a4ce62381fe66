"""Helpers for the ingress, HTML-report and third-party tests (see harness.py)."""
