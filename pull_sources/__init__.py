"""Pull sources: read CRM changes from a stored position (no inbound URL), turn them into
ChangeEvents with pure functions and hand them to the same inbox + enqueue step as the
webhook receiver (`worker.handoff`), then advance the stored position. One package per
source. Nothing here imports `webhook_app`; nothing here calls LeadLex."""
