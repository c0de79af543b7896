"""The HTTP server: aiohttp app, routes, SSE, and the one error -> HTTP table."""
