"""The HTTP API (aiohttp): submit jobs (an input URL or an upload), read their status and
output, cancel them; health, metrics and the OpenAPI document. See app.py (the application),
routes.py (the handlers), openapi.py (what they answer) and README.md's "HTTP API"."""
