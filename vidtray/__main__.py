import sys

from vidtray.cli import main

sys.exit(main())
