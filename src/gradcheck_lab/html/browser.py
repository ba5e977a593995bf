"""Open a page in the system's headless Chromium (for the tests and the screenshots).

The browser is the operating system's (Debian's ``chromium`` package,
``/usr/bin/chromium``), driven by Playwright's Python package pointed at it:
``playwright install`` (a browser download) is never needed. Set
``GRADCHECK_CHROMIUM`` to use another Chromium binary.

The flags keep Chromium quiet on a closed network: without
``--disable-background-networking`` and friends it tries to reach update and
sync services at start-up. Every launch gets a fresh ``--user-data-dir``
(a temporary directory, removed afterwards).

:func:`browser_page` (or :meth:`Session.page`) gives a Playwright page with two lists attached:
``page.problems`` (console errors and uncaught exceptions) and
``page.requests`` (the URL of every request the page made).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "unavailable", "Session", "browser_session", "browser_page"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """The Chromium binary: ``$GRADCHECK_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the PATH."""
    env = os.environ.get("GRADCHECK_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def unavailable() -> str | None:
    """Why no browser test can run here, or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium, or set GRADCHECK_CHROMIUM)"
    return None


class Session:
    """One Playwright driver; :meth:`page` opens pages, each in a fresh Chromium with a fresh profile.

    Playwright's sync API allows one driver per thread, so a test module
    holds one Session and asks it for every page it needs (one with
    JavaScript, one without). Everything opened is closed by :meth:`close`.
    """

    def __init__(self, pw):
        self._pw = pw
        self._open: list = []
        self._profiles: list[str] = []

    def page(self, *, viewport: tuple[int, int] = (1200, 900), javascript: bool = True):
        exe = find_chromium()
        if exe is None:
            raise RuntimeError(unavailable() or "no Chromium")
        profile = tempfile.mkdtemp(prefix="gradcheck-chromium-")
        self._profiles.append(profile)
        ctx = self._pw.chromium.launch_persistent_context(
            profile,
            executable_path=exe,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
            java_script_enabled=javascript,
            offline=True,
        )
        self._open.append(ctx)
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.problems = []
        page.requests = []
        page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: page.problems.append(f"exception: {e}"))
        ctx.on("request", lambda r: page.requests.append(r.url))
        return page

    @staticmethod
    def open(page, path):
        """Load the file ``path`` in ``page`` afresh (its problems and requests cleared); returns the page."""
        page.problems.clear()
        page.requests.clear()
        page.goto(Path(path).resolve().as_uri())
        return page

    def close(self) -> None:
        for ctx in self._open:
            ctx.close()
        self._open.clear()
        for d in self._profiles:
            shutil.rmtree(d, ignore_errors=True)
        self._profiles.clear()


@contextmanager
def browser_session() -> Iterator[Session]:
    """A :class:`Session`; every browser it started is closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        session = Session(pw)
        try:
            yield session
        finally:
            session.close()


@contextmanager
def browser_page(*, viewport: tuple[int, int] = (1200, 900), javascript: bool = True) -> Iterator:
    """One page in a fresh headless Chromium; closed (and its profile removed) on exit."""
    with browser_session() as session:
        yield session.page(viewport=viewport, javascript=javascript)
