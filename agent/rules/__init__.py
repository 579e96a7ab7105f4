"""On-device rules (DESIGN §7): expression compiler, memory, engine, packs, signed bundles.

    from agent.rules import load_engine
    engine = load_engine(device_class="charger", mode="enforce", state_path=..., bundle_dir=...)
    engine.update_twin({"tx.active": True}, now_ms=wall_ms)
    j = engine.judge({"cmd": "ocpp.UnlockConnector", "args": {...}, "src": {...}, "sub": "1"}, now_ms=wall_ms)

Reference of names, helpers, twin keys and commands: agent/rules/README.md.
"""

from .commands import COMMANDS, NEVER_REFUSE, Command
from .engine import Alert, Engine, Judgement, RuleSet, load_engine
from .errors import BundleRejected, RuleEvalError, RuleLoadError, RulesError, ScenarioError, StateError
from .packs import Pack, Rule, default_pack_paths, load_pack_file, load_pack_text

__all__ = [
    "Alert", "BundleRejected", "COMMANDS", "Command", "Engine", "Judgement", "NEVER_REFUSE", "Pack", "Rule",
    "RuleEvalError", "RuleLoadError", "RuleSet", "RulesError", "ScenarioError", "StateError",
    "default_pack_paths", "load_engine", "load_pack_file", "load_pack_text",
]
