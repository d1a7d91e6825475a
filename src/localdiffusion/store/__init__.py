"""Store layer: the home folder, its settings, the SQLite database and atomic file writes."""
