"""Salesforce Change Data Capture over the Pub/Sub API (placeholder docstring)."""
