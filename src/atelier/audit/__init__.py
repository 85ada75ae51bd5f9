"""The audit log: append-only events recording who did what, where and when. Other domains call
`audit.service.record`; nothing updates or deletes an event."""
