"""Hosted servers: the OpenAI-compatible client, one class per server, the llama.cpp server process."""
