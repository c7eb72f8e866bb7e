"""Voice-agent sessions: text that arrives as LLM tokens, spoken as it comes."""
