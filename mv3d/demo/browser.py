"""Drive `mv3d demo` in a real headless browser (Debian's chromium through Playwright).

Used by the tests (tests/test_demo.py) and by the script that takes the README's screenshot
(bench/demo_screenshot.py). Nothing here is needed to serve the page.

    with serve() as server, browser() as ctx:
        page = open_page(ctx, server.url)
        upload(page, "examples/example.png")
        click_generate(page)
        wait_for_result(page)

Playwright is the `dev` extra's; the browser is the system's (`apt-get install chromium`): no browser is
ever downloaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from render.common import optional_import

#: Debian's chromium.
CHROMIUM = "/usr/bin/chromium"
#: Headless, no GPU, and nothing that reaches the network on its own.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Generous: the server loads torch and the model before it answers (10-40 s on a busy 2-core machine).
START_TIMEOUT_S = 180.0


def chromium_path() -> str | None:
    """The chromium executable, or None when it is not installed."""
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running `mv3d demo` subprocess.

    Attributes:
        url: where the page is.
        process: the subprocess.
        lines: what it printed so far (stdout and stderr).
        session_root: the folder that holds the sessions' files (from the start-up line).
    """

    url: str
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    session_root: Path | None = None


@contextlib.contextmanager
def serve(args: tuple[str, ...] = (), timeout_s: float = START_TIMEOUT_S) -> Iterator[Server]:
    """Start `python -m mv3d demo --port <free> ARGS`, wait until the page answers, stop it afterwards."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mv3d", "demo", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    server = Server(f"http://127.0.0.1:{port}/", proc)

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            server.lines.append(line.rstrip("\n"))
            m = re.search(r"session files in (\S+)", line)
            if m:
                server.session_root = Path(m.group(1))

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mv3d demo exited:\n" + "\n".join(server.lines[-20:]))
            try:
                with urllib.request.urlopen(server.url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("mv3d demo did not answer:\n" + "\n".join(server.lines[-20:]))
            time.sleep(1.0)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def browser(viewport: tuple[int, int] = (1280, 1600), playwright: Any = None) -> Iterator[Any]:
    """A fresh headless chromium profile (a Playwright `BrowserContext`, its own session), removed after."""
    sync_api = optional_import("playwright.sync_api", "dev", "driving the demo in a browser")
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="mv3d-chromium-")
    manager = None
    try:
        if playwright is None:
            manager = sync_api.sync_playwright()
            playwright = manager.__enter__()
        ctx = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=exe,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": viewport[0], "height": viewport[1]},
            accept_downloads=True,
        )
        try:
            yield ctx
        finally:
            ctx.close()
    finally:
        if manager is not None:
            manager.__exit__(None, None, None)
        shutil.rmtree(profile, ignore_errors=True)


def open_page(ctx: Any, url: str, timeout_s: float = 60.0) -> Any:
    """A new tab on the demo, once its Generate button is there."""
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("#generate", timeout=timeout_s * 1000)
    return page


#: The status line once the upload has been looked at (see `mv3d.demo.app`): ready, or why not.
UPLOAD_DONE = ("Press Generate", "Cannot use this image")


def upload(page: Any, path: str | Path, timeout_s: float = 60.0) -> str:
    """Put a file into the input image as a user's upload; wait for the verdict; return the status text."""
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "done => done.some(t => document.querySelector('#status').innerText.includes(t))",
        arg=list(UPLOAD_DONE),
        timeout=timeout_s * 1000,
    )
    return page.inner_text("#status")


def set_settings(page: Any, mesh: bool = True, grid: int | None = None, faces: int | None = None) -> None:
    """Set the mesh settings through the page's controls."""
    box = page.locator("#mesh input[type=checkbox]")
    if box.is_checked() != mesh:
        box.click()
    if grid is not None:
        page.locator("#mesh-grid label", has_text=str(grid)).click()
    if faces is not None:
        number = page.locator("#mesh-faces input[type=number]")
        number.fill(str(faces))
        number.press("Enter")


def click_generate(page: Any) -> None:
    page.click("#generate")


def wait_for_result(page: Any, timeout_s: float = 240.0) -> None:
    """Wait until the last download (the orbit dataset) is offered: the generation is shown."""
    page.wait_for_selector("#download-dataset a", timeout=timeout_s * 1000)


def wait_for_viewer_drawn(page: Any, timeout_s: float = 120.0) -> float:
    """Wait until the 3D viewer's canvas shows a mesh (not just its blank background).

    Babylon.js draws a moment after the canvas appears, longer for a large GLB on a software renderer.

    Returns:
        the fraction of the canvas's pixels that differ from its corner (the background) colour.
    """
    import io

    import numpy as np
    from PIL import Image

    canvas = page.locator("#viewer canvas")
    canvas.wait_for(timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while True:
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
        covered = float((np.abs(shot - shot[2, 2]).max(axis=-1) > 24).mean())
        if covered > 0.01:
            return covered
        if time.monotonic() > deadline:
            raise TimeoutError(f"the 3D viewer drew nothing within {timeout_s:.0f} s")
        time.sleep(1.0)


def download(page: Any, elem_id: str, out: Path) -> Path:
    """Fetch the file a download box offers (within the page's own session) into `out`."""
    href = page.locator(f"#{elem_id} a").first.get_attribute("href")
    response = page.request.get(href)
    if not response.ok:
        raise RuntimeError(f"GET {href}: HTTP {response.status}")
    out.write_bytes(response.body())
    return out
