"""The generation worker process: ``python -m vidtray.services.worker``.

It speaks the worker protocol (:mod:`vidtray.services.protocol`: JSON-line commands on stdin, events on
stdout), loads a model once and runs jobs one at a time. Its rooms:

- :mod:`.loop`: the command loop (commands -> jobs, cancel, keep-alive, parent watchdog, signals);
- :mod:`.runner`: one job from request to finished video (disk checks, download, load or reuse, events);
- :mod:`.backend`: what the runner needs from a model runtime (a small interface), and
  :mod:`.diffusers_backend`, its implementation: the ONLY vidtray module that imports torch, diffusers
  and transformers;
- :mod:`.output`: frames -> mp4 in ``.partial/`` -> sidecar -> atomic rename -> library.json + thumbnail;
- :mod:`.partials`: the in-progress files' naming rule and their cleanup (light: the CLI uses it).

This package's own import is light (nothing is imported here), so ``vidtray generate`` can use
:mod:`.partials` without torch.
"""
