"""``python -m vidtray.services.worker``: the worker process (see :mod:`vidtray.services.worker.loop`)."""

import sys

from vidtray.services.worker.loop import main

sys.exit(main())
