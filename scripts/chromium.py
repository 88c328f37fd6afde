"""Open an HTML report in headless Chromium (Debian's `chromium` package) and check or
photograph what a reader would see. Speaks the Chrome DevTools Protocol over
--remote-debugging-pipe (JSON messages separated by NUL bytes on file descriptors 3 and 4), so
it needs nothing but the browser itself: no driver, no websocket package, no network.

    python scripts/chromium.py check runs/latest/…/report.html
    python scripts/chromium.py screenshot REPORT.html --section explain-disagreement-atlas --max-height 1600 \
        --out docs/img/explain-atlas.png

`check` fails (exit 1) on a script error or console error, an image that does not decode or
decodes blank, or a section with nothing in it; tests/test_explain.py runs it on a real report.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The flags Debian's chromium needs to run headless as root in a container without a GPU, a
# session bus or a network, on a profile nobody used before (docs: the project's env notes).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")
NEEDS = ("headless Chromium: Debian's `chromium` package (apt-get install -y chromium; "
         "`make test` runs scripts/test-setup.sh, which installs it when run as root)")


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """One headless Chromium process and one page, driven over the DevTools pipe."""

    def __init__(self, executable: str | None = None, timeout_s: float = 60.0):
        executable = executable or find_chromium()
        if executable is None:
            raise RuntimeError(f"no Chromium found: needs {NEEDS}")
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="gandistill-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies and events on fd 4. Every other fd
        # Python opened is close-on-exec (PEP 446), so close_fds=False leaks nothing.
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=_move_fds(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)

    def send(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], self.timeout_s)
            if not ready:
                raise TimeoutError(f"Chromium did not answer within {self.timeout_s:.0f} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str, width: int = 1200, height: int = 900) -> None:
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                          awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"evaluating a check failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def screenshot(self, path: str | Path, clip: dict[str, float] | None = None) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            params["clip"] = clip | {"scale": 1}
        data = self.send("Page.captureScreenshot", session=True, **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):  # it may be gone already
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _move_fds(read_end: int, write_end: int) -> Any:
    """In the child: the command pipe's read end becomes fd 3, the reply pipe's write end fd 4."""

    def move() -> None:
        import fcntl

        # copies numbered 10 and up first, so neither end is overwritten if it already is 3 or 4
        r, w = fcntl.fcntl(read_end, fcntl.F_DUPFD, 10), fcntl.fcntl(write_end, fcntl.F_DUPFD, 10)
        os.dup2(r, 3)  # inheritable: survives the exec
        os.dup2(w, 4)

    return move


# What a reader would call broken, read from the rendered page: images that did not decode or
# decoded to one flat colour, and sections with neither text nor a table nor a picture.
CHECK_PAGE = """(() => {
  const flat = img => {
    try {
      const canvas = document.createElement('canvas');
      canvas.width = Math.min(img.naturalWidth, 400); canvas.height = Math.min(img.naturalHeight, 400);
      const ctx = canvas.getContext('2d');
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 4; i < px.length; i += 4)
        if (px[i] !== px[0] || px[i + 1] !== px[1] || px[i + 2] !== px[2]) return false;
      return true;
    } catch (e) { return false; }
  };
  const images = Array.from(document.images);
  const label = img => img.alt || img.src.slice(0, 60);
  const sections = Array.from(document.querySelectorAll('section')).map(s => {
    const title = (s.querySelector('h2') || {}).innerText || '(untitled)';
    const text = Array.from(s.querySelectorAll('p, td')).map(e => e.innerText.trim()).join('');
    const pictures = Array.from(s.querySelectorAll('img')).filter(i => i.complete && i.naturalWidth > 0
      && i.getBoundingClientRect().height > 0);
    return {id: s.id, title, text: text.length, tables: s.querySelectorAll('tbody tr').length,
            pictures: pictures.length};
  });
  return {
    title: document.title,
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(label),
    blank: images.filter(i => i.complete && i.naturalWidth > 0 && flat(i)).map(label),
    sections,
    empty: sections.filter(s => s.text === 0 && s.tables === 0 && s.pictures === 0).map(s => s.title),
  };
})()"""


@dataclass
class PageCheck:
    title: str
    images: int
    sections: list[dict[str, Any]]
    broken_images: list[str] = field(default_factory=list)
    blank_images: list[str] = field(default_factory=list)
    empty_sections: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return ([f"image does not decode: {x}" for x in self.broken_images]
                + [f"image is one flat colour: {x}" for x in self.blank_images]
                + [f"section is empty: {x}" for x in self.empty_sections]
                + [f"script/console error: {x}" for x in self.script_errors])


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Uncaught exceptions, console.error calls and error log entries (failed loads included)."""
    out = []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(params["entry"].get("text", "error"))
    return out


def check_page(browser: Browser, path: str | Path) -> PageCheck:
    browser.open(Path(path).resolve().as_uri())
    found = browser.evaluate(CHECK_PAGE)
    return PageCheck(found["title"], found["images"], found["sections"], found["broken"], found["blank"],
                     found["empty"], _errors(browser.events))


def section_clip(browser: Browser, section_id: str) -> dict[str, float]:
    box = browser.evaluate(f"""(() => {{ const s = document.getElementById({json.dumps(section_id)});
        if (!s) return null; const r = s.getBoundingClientRect();
        return {{x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height}}; }})()""")
    if box is None:
        raise RuntimeError(f"no section with id {section_id!r} in the page")
    return box


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="fail on script errors, broken or blank images, empty sections")
    check.add_argument("report")
    shot = sub.add_parser("screenshot", help="a PNG of the page, or of one section by its id")
    shot.add_argument("report")
    shot.add_argument("--out", required=True)
    shot.add_argument("--section", help="the section's id (its title in lower case, words joined by '-')")
    shot.add_argument("--width", type=int, default=1200)
    shot.add_argument("--max-height", type=int, help="crop the picture to its top this many pixels")
    args = parser.parse_args(argv)
    if find_chromium() is None:
        print(f"needs {NEEDS}", file=sys.stderr)
        return 2
    with Browser() as browser:
        if args.command == "check":
            result = check_page(browser, args.report)
            for problem in result.problems:
                print(problem)
            print(f"{args.report}: {result.images} images, {len(result.sections)} sections, "
                  f"{len(result.problems)} problems")
            return 1 if result.problems else 0
        browser.open(Path(args.report).resolve().as_uri(), width=args.width)
        clip = section_clip(browser, args.section) if args.section else None
        if args.max_height:
            clip = (clip or {"x": 0, "y": 0, "width": args.width}) | {
                "height": min(args.max_height, (clip or {}).get("height", args.max_height))}
        print(browser.screenshot(args.out, clip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
