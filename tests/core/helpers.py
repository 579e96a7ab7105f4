"""Builders for core tests: a device that seals records, and its trust anchors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agent.core.chain import ChainState, Sealer
from agent.core.export import Trust, enrollment_doc
from agent.core.keys import generate_signer


@dataclass
class Device:
    device_id: str = "dev-A"
    alg: str = "Ed25519"
    k0: bytes = field(default_factory=lambda: os.urandom(32))

    def __post_init__(self) -> None:
        self.signer = generate_signer(self.alg)
        self.sealer = Sealer(ChainState.genesis(self.device_id, self.k0), self.signer)
        self.items: list[tuple[bytes, list[bytes]]] = []
        self.clock = 0

    def trust(self) -> Trust:
        return Trust.from_enrollment(
            enrollment_doc(self.device_id, [(self.signer.kid, self.signer.alg, self.signer.public_bytes())], self.k0)
        )

    def batch(self, n: int, kind: str = "api", **extra) -> tuple[bytes, list[bytes]]:
        for i in range(n):
            self.clock += 1
            self.sealer.append({"kind": kind, "api": "ocpp.MeterValues", "st": 200, "lat": 100 + i, **extra},
                               self.clock, 1_700_000_000_000 + self.clock)
        sealed = self.sealer.seal(mono=self.clock, wall=1_700_000_000_000 + self.clock, reason="size")
        item = (sealed.message, list(sealed.records))
        self.items.append(item)
        return item

    def restart(self) -> None:
        """A new boot epoch: the sealer continues from the persisted state."""
        from dataclasses import replace
        st = replace(self.sealer.state, boot=self.sealer.state.boot + 1)
        self.sealer = Sealer(st, self.sealer.signer)
