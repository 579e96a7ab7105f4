"""The rule core is pure (no sockets, no sqlite) and the bench's peer translations are complete."""
from __future__ import annotations

import ast
import subprocess
import sys

from agent.rules import load_engine


def test_rule_core_imports_without_socket_or_sqlite():
    code = ("import sys\nsys.modules['socket'] = None\nsys.modules['sqlite3'] = None\n"
            "import agent.twin, agent.rules.expr, agent.rules.memory, agent.rules.packs, agent.rules.engine\n"
            "e = agent.rules.engine.load_engine(device_class='tcu')\n"
            "print(e.judge({'cmd': 'tcu.locate'}, 1).verdict)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("allow", "alert", "block", "defer")


def test_every_default_rule_translates_for_both_peers():
    import celpy
    import rule_engine

    from agent.rules import bench
    for dc in ("charger", "tcu"):
        engine = load_engine(device_class=dc)
        for kind in ("re", "cel"):
            state = bench._PeerState(engine)
            for rule in engine.rules:
                src = bench._translate(ast.parse(f"(\n{rule.when_src}\n)", mode="eval").body, rule.id, kind, state)
                if kind == "re":
                    rule_engine.Rule(src, context=rule_engine.Context(default_value=None))
                else:
                    env = celpy.Environment()
                    env.program(env.compile(src), functions=state.functions_cel())
