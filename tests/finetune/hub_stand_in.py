"""A tiny local HTTP server that answers like the Hugging Face Hub for dataset and model repos.

It serves the calls huggingface_hub makes for ``dataset_info`` / ``model_info``, ``snapshot_download``
and ``hf_hub_download`` (revision, tree listing, file metadata and file bodies, ``Range`` requests for a
resumed download), so tests run the app's real Hub code path without the network. Every request is
recorded, so a test can check what was downloaded (and that nothing was when it should not be).

Model repos answer like the real Hub's file API: a ``*.safetensors`` or ``*.gguf`` file is an LFS file
(its ``lfs.sha256`` in the listing, its sha256 as the ETag), any other file a git blob (its git blob
sha1). A test can make a file's body arrive corrupted (``corrupt``) or cut off after some bytes
(``cut``), to check verification and resuming.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class HubStandIn:
    """``with HubStandIn({"owner/name": {"train.csv": b"..."}}) as hub:`` then use ``hub.endpoint``."""

    def __init__(self, repos: dict[str, dict[str, bytes]], gated: tuple[str, ...] = (),
                 models: dict[str, dict[str, bytes]] | None = None):
        self.repos = repos  # dataset repos
        self.models = models or {}  # model repos
        self.gated = set(gated)
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.ranges: list[tuple[str, str]] = []  # (path, Range header) of the GETs that asked for part of a file
        self.corrupt: set[str] = set()  # "owner/name/file": the body is served with one byte changed
        # "owner/name/file": [offset, times]: the next ``times`` bodies stop at byte ``offset`` and the connection closes
        self.cut: dict[str, list[int]] = {}
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

    @staticmethod
    def is_lfs(filename: str) -> bool:
        return filename.endswith((".safetensors", ".gguf", ".bin"))

    @staticmethod
    def git_sha1(body: bytes) -> str:
        """The git blob id of ``body`` (what the Hub gives for a file that is not in LFS)."""
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    def _model_sibling(self, filename: str, body: bytes) -> dict:
        entry = {"rfilename": filename, "size": len(body), "blobId": self.git_sha1(body)}
        if self.is_lfs(filename):
            entry["lfs"] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "pointerSize": 134}
        return entry

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

    def _model_answer(self, handler, path: str, head: bool) -> bool:
        """Answer a model repo's call (True), or leave ``path`` to the dataset routes (False)."""
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/"):].split("/")
            repo_id, tail = "/".join(rest[:2]), rest[2:]
            if repo_id in self.gated:
                self._missing(handler, "GatedRepo", head)
            elif repo_id not in self.models:
                self._missing(handler, head=head)
            elif not tail or tail[0] == "revision":
                files = self.models[repo_id]
                self._json(handler, {"id": repo_id, "modelId": repo_id, "sha": self.sha(repo_id), "private": False,
                                     "siblings": [self._model_sibling(p, b) for p, b in files.items()]}, head)
            elif tail[0] == "tree":
                self._json(handler, [{"type": "file", "path": p, "size": len(b), "oid": self.git_sha1(b),
                                      **({"lfs": {"size": len(b), "oid": hashlib.sha256(b).hexdigest()}}
                                         if self.is_lfs(p) else {})}
                                     for p, b in self.models[repo_id].items()], head)
            else:
                self._missing(handler, "EntryNotFound", head)
            return True
        if "/resolve/" not in path or path.startswith("/datasets/"):
            return False
        repo_id, rest = path.lstrip("/").split("/resolve/", 1)
        files = self.models.get(repo_id)
        if files is None:
            return False
        filename = rest.split("/", 1)[1] if "/" in rest else ""
        if filename not in files:
            self._missing(handler, "EntryNotFound", head)
            return True
        body = files[filename]
        headers = {"X-Repo-Commit": self.sha(repo_id), "Accept-Ranges": "bytes"}
        if self.is_lfs(filename):
            digest = hashlib.sha256(body).hexdigest()
            headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(body))})
        else:
            headers["ETag"] = f'"{self.git_sha1(body)}"'
        key = f"{repo_id}/{filename}"
        if key in self.corrupt and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        start = 0
        asked = handler.headers.get("Range", "")
        if asked.startswith("bytes=") and not head:
            self.ranges.append((path, asked))
            start = int(asked[len("bytes="):].split("-", 1)[0] or 0)
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        part = body[start:]
        offset, times = self.cut.get(key, (0, 0))
        if head or times <= 0 or start >= offset:
            self._send(handler, 206 if start else 200, part, headers, head)
            return True
        # Cut off: promise the whole body, send it up to the offset, then close the connection.
        self.cut[key] = [offset, times - 1]
        handler.send_response(206 if start else 200)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(part)))
        handler.end_headers()
        handler.wfile.write(part[:offset - start])
        handler.wfile.flush()
        handler.close_connection = True
        return True

    def _answer(self, handler, head: bool):
        path = unquote(urlparse(handler.path).path)
        self.requests.append(("HEAD" if head else "GET", path))
        if self._model_answer(handler, path, head):
            return
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
                                                          "blobId": self.git_sha1(b)}
                                                         for p, b in files.items()]}, head)
            if tail[0] == "tree":
                return self._json(handler, [{"type": "file", "path": p, "size": len(b),
                                             "oid": self.git_sha1(b)} for p, b in files.items()], head)
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
                                                   "ETag": f'"{self.git_sha1(body)}"'}, head)
        self._missing(handler, "EntryNotFound", head)
