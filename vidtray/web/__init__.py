"""The library page: a loopback-only web server (ASGI) that shows library.json as a gallery, with the queue
and the storage report beside it. It runs as its own process (``vidtray library serve``).

Only ``launch`` and ``token`` are light (standard library and vidtray's own light modules): the tray uses
them to start or reuse that process. Everything else here imports the web stack (Starlette, uvicorn,
Jinja2) and is imported only inside the page process.
"""
