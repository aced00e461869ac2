"""Declarative, exact, versioned per-user features over event-time windows (issue 14)."""
