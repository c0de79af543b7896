"""Model providers: one streaming interface; demo (offline), OpenAI-compatible and Anthropic."""
