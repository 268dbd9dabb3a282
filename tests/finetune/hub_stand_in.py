"""A tiny local HTTP server that answers like the Hugging Face Hub for dataset repos.

It serves the calls huggingface_hub makes for ``dataset_info``, ``snapshot_download``
(revision, tree listing, file metadata and file bodies), so tests run the app's real Hub
code path without the network. Every request is recorded, so a test can check what was
downloaded (and that nothing was when it should not be).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class HubStandIn:
    """``with HubStandIn({"owner/name": {"train.csv": b"..."}}) as hub:`` then use ``hub.endpoint``."""

    def __init__(self, repos: dict[str, dict[str, bytes]], gated: tuple[str, ...] = ()):
        self.repos = repos
        self.gated = set(gated)
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self._server: ThreadingHTTPServer | None = None

    # -- what a test looks at ----------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def downloaded(self) -> list[str]:
        """The repo files whose bodies were fetched (GET on /resolve/)."""
        return sorted(path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path in self.requests
                      if method == "GET" and "/resolve/" in path)

    @staticmethod
    def sha(repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()

    # -- serving ------------------------------------------------------------------
    def __enter__(self) -> "HubStandIn":
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                stand_in._answer(self, head=True)

            def do_GET(self):
                stand_in._answer(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _send(self, handler, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _json(self, handler, value, head: bool = False):
        self._send(handler, 200, json.dumps(value).encode(), {"Content-Type": "application/json"}, head)

    def _missing(self, handler, code: str = "RepoNotFound", head: bool = False):
        self._send(handler, 404 if code != "GatedRepo" else 401, json.dumps({"error": code}).encode(),
                   {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}, head)

    def _answer(self, handler, head: bool):
        path = unquote(urlparse(handler.path).path)
        self.requests.append(("HEAD" if head else "GET", path))
        if path.startswith("/api/datasets/"):
            rest = path[len("/api/datasets/"):].split("/")
            repo_id, tail = "/".join(rest[:2]), rest[2:]
            if repo_id in self.gated:
                return self._missing(handler, "GatedRepo", head)
            if repo_id not in self.repos:
                return self._missing(handler, head=head)
            files = self.repos[repo_id]
            if not tail or tail[0] == "revision":
                return self._json(handler, {"id": repo_id, "sha": self.sha(repo_id), "private": False,
                                            "siblings": [{"rfilename": p, "size": len(b),
                                                          "blobId": hashlib.sha1(b).hexdigest()}
                                                         for p, b in files.items()]}, head)
            if tail[0] == "tree":
                return self._json(handler, [{"type": "file", "path": p, "size": len(b),
                                             "oid": hashlib.sha1(b).hexdigest()} for p, b in files.items()], head)
            return self._missing(handler, "EntryNotFound", head)
        if path.startswith("/datasets/") and "/resolve/" in path:
            repo_id, rest = path[len("/datasets/"):].split("/resolve/", 1)
            filename = rest.split("/", 1)[1]
            files = self.repos.get(repo_id)
            if files is None:
                return self._missing(handler, head=head)
            if filename not in files:
                return self._missing(handler, "EntryNotFound", head)
            body = files[filename]
            return self._send(handler, 200, body, {"X-Repo-Commit": self.sha(repo_id),
                                                   "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}, head)
        self._missing(handler, "EntryNotFound", head)
