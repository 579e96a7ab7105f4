"""A minimal c2sp.org/tlog-witness, and the collector's side of asking it to cosign.

`veritrail witness init --dir D --name NAME` makes the witness's own Ed25519 key (mode 0600);
`veritrail witness run --dir D --log VKEY [--log VKEY ...] --port P` serves
``POST /add-checkpoint``: it verifies the log's signature, checks the old size against the
last size it cosigned for that origin (409 with that size if they differ), checks the
consistency proof (422 if it does not verify; 409 for equal sizes with another root), then
saves the new size and root atomically (under a lock, fsync + rename) before answering
with a cosignature/v1 line. Someone other than the collector's operator runs it.

``request_cosignature`` is what the collector runs (`veritrail log cosign`): it sends its
latest checkpoint with a consistency proof from the witness's size, verifies the cosignature
and stores it, so ``/log/checkpoint`` and evidence bundles carry it.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.core import tlog
from agent.core.errors import LogFormatError, NoteMalformed
from agent.core.keys import Ed25519Signer
from agent.core.note import (
    COSIG_TYPE, NoteSigner, Verifier, matching, open_checkpoint, parse_note, parse_signature_lines, unb64,
    verify_signature,
)

MAX_REQUEST_BYTES = 128 * 1024


class WitnessError(Exception):
    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason, self.body = status, reason, body


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """(old size, consistency proof, checkpoint note) of a request body; WitnessError(400)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessError(400, "body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessError(400, "no empty line before the checkpoint")
    lines = head.split("\n")
    old = lines[0]
    if not old.startswith("old ") or not old[4:].isascii() or not old[4:].isdigit() or \
            (old[4:] != "0" and old[4:].startswith("0")) or len(old) > 24:
        raise WitnessError(400, "bad old size line")
    proof_lines = lines[1:]
    if len(proof_lines) > tlog.MAX_PROOF_HASHES:
        raise WitnessError(400, "more than 63 consistency proof lines")
    try:
        proof = [unb64(p, "proof hash") for p in proof_lines]
    except NoteMalformed as exc:
        raise WitnessError(400, exc.reason) from None
    if any(len(p) != 32 for p in proof):
        raise WitnessError(400, "a proof hash is not 32 bytes")
    return int(old[4:]), proof, note


class Witness:
    def __init__(self, directory: str | os.PathLike, logs: list[Verifier], *, clock=time.time) -> None:
        self.dir = Path(directory)
        key = json.loads((self.dir / "witness.key").read_text())
        self.signer = NoteSigner(key["name"], Ed25519Signer(bytes.fromhex(key["priv"])), COSIG_TYPE)
        self.logs = {v.name: v for v in logs}
        self.clock = clock
        self._lock = threading.Lock()

    @staticmethod
    def init(directory: str | os.PathLike, name: str) -> Verifier:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        signer = Ed25519Signer.generate()
        fd = os.open(d / "witness.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"name": name, "priv": signer.private_bytes().hex()}, f)
        v = NoteSigner(name, signer, COSIG_TYPE).verifier
        (d / "witness.vkey").write_text(v.vkey() + "\n")
        return v

    def _state(self) -> dict[str, Any]:
        p = self.dir / "state.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.dir / "state.json.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "state.json")

    def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line(s) for a request, or WitnessError with the spec's status."""
        if len(body) > MAX_REQUEST_BYTES:
            raise WitnessError(400, "request too large")
        old, proof, note_text = parse_add_checkpoint(body)
        try:
            signed_text = parse_note(note_text).text
        except LogFormatError as exc:
            raise WitnessError(400, str(exc)) from None
        origin = signed_text.split("\n", 1)[0]
        key = self.logs.get(origin)
        if key is None:
            raise WitnessError(404, f"unknown log {origin[:80]!r}")
        try:
            cp, _ = open_checkpoint(note_text, key)
        except LogFormatError as exc:
            raise WitnessError(403, str(exc)) from None
        if old > cp.size:
            raise WitnessError(400, f"old size {old} is larger than the checkpoint's {cp.size}")
        with self._lock:
            state = self._state()
            have = state.get(origin)
            have_size = 0 if have is None else int(have["size"])
            if old != have_size:
                raise WitnessError(409, f"the last cosigned size is {have_size}", f"{have_size}\n")
            if have is not None and old == cp.size:
                if bytes.fromhex(have["root"]) != cp.root:
                    raise WitnessError(409, "same size, different root")
            elif have is not None and not tlog.verify_consistency(old, cp.size, bytes.fromhex(have["root"]), cp.root, proof):
                raise WitnessError(422, "the consistency proof does not verify")
            elif have is None and proof:
                raise WitnessError(422, "the proof must be empty from size 0")
            state[origin] = {"size": cp.size, "root": cp.root.hex()}
            self._save(state)
        return self.signer.cosign_line(signed_text, int(self.clock()))

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        witness = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.rstrip("/") != "/add-checkpoint":
                    self._send(404, "not found\n")
                    return
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    n = -1
                if not 0 <= n <= MAX_REQUEST_BYTES:
                    self._send(400, "bad Content-Length\n")
                    return
                try:
                    self._send(200, witness.add_checkpoint(self.rfile.read(n)))
                except WitnessError as exc:
                    ctype = "text/x.tlog.size" if exc.status == 409 and exc.body else "text/plain; charset=utf-8"
                    self._send(exc.status, exc.body or exc.reason + "\n", ctype)

            def _send(self, status: int, text: str, ctype: str = "text/plain; charset=utf-8") -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return ThreadingHTTPServer((host, port), Handler)


# --- the collector's side ---------------------------------------------------------------

def _post(url: str, body: bytes, timeout_s: float) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read(MAX_REQUEST_BYTES).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(4096).decode("utf-8", "replace")


def request_cosignature(store: Any, witness_url: str, witness: Verifier, *, now_ms: int,
                        timeout_s: float = 20.0) -> int:
    """Ask a witness to cosign the latest checkpoint; store the verified cosignature. Returns
    the size cosigned. Raises WitnessError for a refusal (its status and reason)."""
    from . import store_node
    head = store.tlog_head()
    if head is None:
        raise WitnessError(0, "the log is empty")
    size, _, note = head
    text = parse_note(note).text
    old = store.tlog_witness_size(witness.vkey())
    url = witness_url.rstrip("/") + "/add-checkpoint"
    for _ in range(2):
        proof = tlog.consistency_proof(old, size, store_node(store)) if old <= size else []
        body = (f"old {old}\n" + "".join(base64.b64encode(p).decode() + "\n" for p in proof) + "\n" + note).encode()
        status, reply = _post(url, body, timeout_s)
        if status == 409 and reply.strip().isdigit() and int(reply.strip()) != old:
            old = int(reply.strip())   # the witness is elsewhere: retry from its size
            continue
        break
    if status != 200:
        raise WitnessError(status, reply.strip()[:200] or "refused")
    try:
        lines = parse_signature_lines(reply)
        note_obj = parse_note(text + "\n" + "".join(s.line for s in lines))
    except LogFormatError as exc:
        raise WitnessError(502, f"bad cosignature reply: {exc}") from None
    mine = matching(note_obj, witness)
    if not mine or not all(verify_signature(note_obj, s, witness) for s in mine):
        raise WitnessError(502, "the witness's cosignature does not verify")
    with store.transaction():
        store.tlog_add_cosig(size, witness.vkey(), mine[0].line, now_ms)
    return size
