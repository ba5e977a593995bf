"""Self-contained HTML pages: the lesson (``explain``), a training run (``train``), a report (``verify``).

Each function returns one HTML document as a string: inline CSS, inline SVG
and a little inline JavaScript, nothing loaded from anywhere (no server, no
network, no CDN), readable with JavaScript off. :func:`write_page` writes
one to a file. Nothing here imports torch or SymPy at import time.
"""

from __future__ import annotations

from .base import write_page
from .explain import explain_page
from .train import train_page
from .verify import verify_page

__all__ = ["explain_page", "train_page", "verify_page", "write_page"]
