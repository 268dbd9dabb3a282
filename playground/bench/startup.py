"""Start-up: seconds from starting ``app.py`` (no model loaded) to its first HTTP 200 (target: under 10 s)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from playground.bench.core import REPO_ROOT, CpuWatch, Figure, Measure, free_port, log

STARTUP = Measure("app start-up to ready", "s", "< 10 s")


def bench_startup(scratch: Path, timeout_s: float = 60.0) -> Figure:
    """Seconds from starting ``app.py`` (no model loaded) to its first HTTP 200."""
    import urllib.error
    import urllib.request

    app = REPO_ROOT / "app.py"
    if not app.is_file():
        return STARTUP.not_measured(f"{app} does not exist")
    port = free_port()
    data_dir = scratch / "startup-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = scratch / "startup.log"
    env = {**os.environ, "PLAYGROUND_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}/"
    log(f"starting app.py on port {port} (up to {timeout_s:.0f} s)")
    watch = CpuWatch()
    with open(log_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(app), "--port", str(port), "--data-dir", str(data_dir)],
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        ready: float | None = None
        problem = ""
        try:
            while time.perf_counter() - started < timeout_s:
                if proc.poll() is not None:
                    problem = f"app.py exited with code {proc.returncode} before answering"
                    break
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            ready = time.perf_counter() - started
                            break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.1)
            else:
                problem = f"no HTTP 200 from {url} within {timeout_s:.0f} s"
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if ready is None:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        return STARTUP.not_measured(problem + (f"; log: {' | '.join(tail)}" if tail else ""))
    return STARTUP.measured(ready, f"python app.py with PLAYGROUND_OFFLINE=1 until GET / answered 200{watch.note()}")
