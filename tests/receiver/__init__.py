"""Tests of the webhook receiver (webhook_app), against a real Redis."""
