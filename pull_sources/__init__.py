"""Pull sources: long-running readers of a CRM's change stream (one package per source).

Each turns what it reads into ChangeEvents with pure functions and hands them to the same
inbox + enqueue step the webhook receiver uses (worker.handoff); only then does it advance
its stored position. No source ever calls LeadLex.
"""
