"""The agent loop shared by the queen and the workers."""
