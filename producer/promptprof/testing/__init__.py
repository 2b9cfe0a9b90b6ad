"""Test helpers shipped with promptprof (fake LLM providers for tests and demos)."""
