"""Sessions: the registry, a session's coordination of its worker and sub-calls, its signed store."""
