"""Server layer: the FastAPI app (studio API under /api, A1111 API under /sdapi/v1, live events, the web UI)."""
