"""Cron schedules in a time zone: CRUD, the scheduler loop, and the scheduled actions (wake,
shutdown)."""
