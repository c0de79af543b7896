"""apiary: a runtime for long-running LLM agent sessions."""

__version__ = "0.1.0"
