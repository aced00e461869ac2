"""History: columnar per-user chunks of acknowledged events, the background step that writes
and compacts them, retention, and the dead letters written by the same step."""
