"""Render a local HTML file in headless Debian Chromium with networking disabled.

Returns the DOM after scripts ran, and every network request the *page* attempted (chromium's own
background requests, whose initiator is "not an origin", are ignored). Used by the report and viz tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:")


def find_chromium() -> str | None:
    return next((shutil.which(c) for c in CHROMIUM_CANDIDATES if shutil.which(c)), None)


@dataclass
class BrowserResult:
    dom: str
    external_requests: list[str]


def _page_requests(netlog: Path) -> list[str]:
    data = json.loads(netlog.read_text(encoding="utf-8", errors="replace") or "{}")
    event_types = {v: k for k, v in data.get("constants", {}).get("logEventTypes", {}).items()}
    urls = []
    for event in data.get("events", []):
        params = event.get("params") or {}
        url = params.get("url", "")
        if event_types.get(event.get("type")) != "URL_REQUEST_START_JOB" or not url:
            continue
        if params.get("initiator") == "not an origin":  # the browser's own housekeeping
            continue
        if not url.startswith(LOCAL_SCHEMES):
            urls.append(url)
    return sorted(set(urls))


def render_in_browser(html_path: Path, *, budget_ms: int = 15000, timeout_s: int = 120) -> BrowserResult:
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile_dir:
        netlog = Path(profile_dir) / "netlog.json"
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile_dir}/profile", f"--virtual-time-budget={budget_ms}",
            # No network: every host fails to resolve and any proxy use goes to a closed port.
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
            f"--log-net-log={netlog}", "--net-log-capture-mode=Default",
            "--dump-dom", Path(html_path).resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
        return BrowserResult(dom=proc.stdout, external_requests=_page_requests(netlog))
