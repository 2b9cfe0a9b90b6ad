"""promptprof: profile the prompts a service sends to LLMs."""
