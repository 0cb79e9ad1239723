"""A local Salesforce Pub/Sub API for Change Data Capture (dev mode and tests)."""
