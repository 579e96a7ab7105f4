"""Verdicts and the per-command-class fail policy used when the agent cannot answer.

    policy = FailPolicy({"tcu.door_*": "closed", "ocpp.UnlockConnector": "closed"}, default="open")
    policy.action_for("tcu.door_unlock")  -> "block"

Patterns are exact names or a prefix ending in "*"; the most specific match wins (an exact
name beats any prefix, a longer prefix beats a shorter one).

Portable core: runs unchanged on CPython and MicroPython.
"""

__all__ = ["Verdict", "FailPolicy", "ACTIONS"]

ACTIONS = ("allow", "alert", "block", "defer")
_MODES = ("open", "closed")


class Verdict:
    """The answer to `check()`.

    action   "allow" | "alert" | "block" | "defer"
    allowed  True for allow/alert: the device may carry the command out now
    source   "agent" (rules judged it) or "fallback" (fail policy, see `reason`)
    reason   why the fallback applied: "no_agent", "timeout", "agent_busy", ...
    rules, seq, bundle, why: as sent by the agent (empty/None for a fallback)
    """

    def __init__(self, action, source="agent", reason=None, rules=(), seq=None, bundle=None, why=None):
        if action not in ACTIONS:
            raise ValueError("verdict action must be one of %s, got %r" % (ACTIONS, action))
        self.action = action
        self.source = source
        self.reason = reason
        self.rules = list(rules)
        self.seq = seq
        self.bundle = bundle
        self.why = why

    @property
    def allowed(self):
        return self.action == "allow" or self.action == "alert"

    def __bool__(self):
        return self.allowed

    def __repr__(self):
        return "Verdict(%r, source=%r, reason=%r, rules=%r)" % (self.action, self.source, self.reason, self.rules)

    @classmethod
    def from_reply(cls, msg):
        """Build from an agent `verdict` reply; raises ValueError if it is not one."""
        action = msg.get("v")
        rules = msg.get("r") or []
        if not isinstance(rules, list):
            raise ValueError("verdict rules must be a list")
        return cls(action, "agent", None, rules, msg.get("seq"), msg.get("rb"), msg.get("why"))


class FailPolicy:
    def __init__(self, patterns=None, default="open"):
        if default not in _MODES:
            raise ValueError("fail_default must be 'open' or 'closed', got %r" % (default,))
        self.default = default
        self._exact = {}
        self._prefixes = []
        for pattern in patterns or {}:
            mode = patterns[pattern]
            if not isinstance(pattern, str) or not pattern:
                raise ValueError("fail_policy pattern must be a non-empty str, got %r" % (pattern,))
            if mode not in _MODES:
                raise ValueError("fail_policy[%r] must be 'open' or 'closed', got %r" % (pattern, mode))
            if pattern.endswith("*"):
                self._prefixes.append((pattern[:-1], mode))
            else:
                self._exact[pattern] = mode
        self._prefixes.sort(key=lambda item: -len(item[0]))

    def mode_for(self, command):
        mode = self._exact.get(command)
        if mode is not None:
            return mode
        for prefix, mode in self._prefixes:
            if command.startswith(prefix):
                return mode
        return self.default

    def action_for(self, command):
        return "allow" if self.mode_for(command) == "open" else "block"
