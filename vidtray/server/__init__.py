"""The GPU server (``vidtray server``, extra ``server``): a Ray Serve HTTPS service that runs desktops' jobs
on shared GPUs.

- :mod:`~vidtray.server.tokens`: per-person access tokens, stored hashed (no Ray; the CLI uses it).
- :mod:`~vidtray.server.tls`: ``--self-signed``: a CA and a server certificate (``cryptography``).
- :mod:`~vidtray.server.slot`: one GPU (or CPU slot): a plain Ray actor running today's worker process as
  its child, so keep-alive, progress and cancel mean what they mean on a desktop.
- :mod:`~vidtray.server.board`: the jobs: a queue over the slots, each job's events kept for a resumable
  stream, its files until the desktop fetched them. Jobs live here, not in an HTTP request.
- :mod:`~vidtray.server.ingress`: the HTTPS API (a Serve deployment): bearer tokens, the request schema.
- :mod:`~vidtray.server.service`: starting and stopping all of it (``vidtray server up|down``).

Only this package imports Ray, and only the modules that need it; desktops never do (they speak HTTPS,
:mod:`vidtray.services.remote`).
"""
