//! Snapshot of the expansion of a typical fn (see `tests/expand/`).
