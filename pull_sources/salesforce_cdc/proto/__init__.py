"""Salesforce Pub/Sub API (eventbus.v1): our `pubsub_api.proto` and the stubs generated from it.

`pubsub_api_pb2*.py(i)` are generated (see regenerate.py) and committed; ruff and mypy skip
them (pyproject says why).
"""
