"""The watcher's parts; ``vidtray.services.watcher.Watcher`` wires them together.

* ``intake``: watchdog's events -> what the next tick has to do (observer threads; records only);
* ``settle``: files waiting until their size and mtime stay put, the retry set with its backoff, and
  probing what settled;
* ``sync``: one library write per tick for everything it learned, and noticing entries another
  program's unlocked write dropped;
* ``reconcile``: the library brought in line with the disk (at start, when a folder comes back, rescan);
* ``folders``: which folders are watched, arming them and re-arming those that vanished and came back,
  and one name for a file seen through overlapping watch folders;
* ``thumbs``: thumbnails, on their own thread, after the entries are in;
* ``files``: what the watcher asks of a path (ignored? gone? the same file?).
"""
