"""The demo: simulated LLM traffic through the real producer, shown live in the terminal."""
