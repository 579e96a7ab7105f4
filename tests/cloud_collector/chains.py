"""A simulated device chain for collector tests (real Sealer, real keys)."""

from __future__ import annotations

import os

from agent.core.chain import ChainState, Sealer
from agent.core.export import Trust, enrollment_doc
from agent.core.keys import generate_signer
from agent.core.verify import EVICTED


class DeviceChain:
    def __init__(self, device_id: str = "cp-0001") -> None:
        self.device_id = device_id
        self.k0 = os.urandom(32)
        self.signer = generate_signer()
        self.sealer = Sealer(ChainState.genesis(device_id, self.k0), self.signer)
        self.t = 0
        self.items: list[tuple[bytes, list[bytes]]] = []

    def trust(self) -> Trust:
        return Trust.from_enrollment(self.enrollment())

    def enrollment(self) -> dict:
        return enrollment_doc(self.device_id, [(self.signer.kid, self.signer.alg, self.signer.public_bytes())], self.k0)

    def cp(self, n: int = 3, *, kind: str = "api", why: str = "timer", **fields) -> tuple[bytes, list[bytes]]:
        for i in range(n):
            self.t += 5
            self.sealer.append({"kind": kind, "api": "ocpp.MeterValues", "st": "Accepted", "lat": 900 + i, **fields},
                               self.t, 1_700_000_000_000 + self.t)
        s = self.sealer.seal(mono=self.t, wall=1_700_000_000_000 + self.t, reason=why)
        item = (s.message, list(s.records))
        self.items.append(item)
        return item

    def evicted(self, first_item: int, last_item: int) -> tuple[bytes, list[bytes]]:
        """Seal an `agent.evicted` record describing items[first_item..last_item]."""
        from agent.core.checkpoint import parse
        a, b = parse(self.items[first_item][0]), parse(self.items[last_item][0])
        x = {"first": a.first, "last": b.last, "cps": [a.cp, b.cp], "last_cp_hash": b.hash}
        return self.cp(1, kind="agent", why="security", **{"api": EVICTED, "x": x})
