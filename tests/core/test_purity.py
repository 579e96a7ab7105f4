"""The shared core does no I/O: it imports and works where socket and sqlite3 cannot load."""

import subprocess
import sys

SCRIPT = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name in ("socket", "_socket", "sqlite3", "_sqlite3", "ssl", "asyncio", "select", "selectors"):
            raise ImportError(f"I/O module {name} imported by the core")
        return None
sys.meta_path.insert(0, Block())
import agent.core as core
import pkgutil, importlib
for m in pkgutil.iter_modules(core.__path__):
    importlib.import_module("agent.core." + m.name)
from agent.core.chain import ChainState, Sealer
from agent.core.keys import generate_signer
s = Sealer(ChainState.genesis("d", bytes(32)), generate_signer())
s.append({"api": "x"}, 1, 1)
s.seal(mono=1, wall=1, reason="size")
print("pure")
"""


def test_core_imports_no_io_modules():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pure"
