"""OpenAI-compatible /v1 surface: routes, upstream client, SSE parsing, response rewriting."""
