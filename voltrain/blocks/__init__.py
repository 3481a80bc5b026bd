"""Resumable blockwise work with daisy 2, shared by ``voltrain predict`` and ``segment``.

- ``record``: done markers, failure records and worker logs of one blockwise stage;
- ``run``: one daisy task over a ROI on 127.0.0.1 with retries and a block timeout, and
  the one-line message that names the blocks that kept failing;
- ``serve``: a worker's loop that processes blocks and records the failures.

The modules import only the standard library, numpy and funlib at import time: daisy's
spawned workers load them before they know what they will run.
"""
