"""Sessions: the queen, her phases, the session manager, fork and recovery."""
