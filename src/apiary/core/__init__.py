"""Foundation types shared by every layer: errors, settings, ids, clock, messages, events."""
