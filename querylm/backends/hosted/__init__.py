"""Hosted OpenAI-compatible servers: the HTTP client, one class per server kind, and the llama.cpp launcher."""
