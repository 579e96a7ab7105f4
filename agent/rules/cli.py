"""`veritrail rules ...`: lint packs, replay scenarios, make fleet keys, build signed bundles.

    veritrail rules check PACK...                       lint (exit 1 on the first bad pack)
    veritrail rules test PACK... SCENARIO [--mode M]    replay; print which rules fired
    veritrail rules keygen -o FLEETKEY [--alg A]        FLEETKEY (0600) + FLEETKEY.pub
    veritrail rules bundle PACK... --key FLEETKEY --version N -o OUT
    veritrail rules inspect BUNDLE [--pub FLEETKEY.pub] show (and verify) a bundle
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .engine import Engine, RuleSet
from .errors import BundleRejected, RuleLoadError, ScenarioError
from .packs import load_pack_file
from .scenario import load_scenario, replay

KEY_FORMAT = "veritrail-fleet-key/1"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="veritrail rules", description="bundle, lint and test rule packs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="lint rule pack files")
    p.add_argument("packs", nargs="+", type=Path)
    p = sub.add_parser("test", help="replay a scenario against packs and print which rules fired")
    p.add_argument("paths", nargs="+", type=Path, metavar="PACK... SCENARIO")
    p.add_argument("--mode", choices=("monitor", "enforce"), default="enforce")
    p = sub.add_parser("keygen", help="create a fleet signing key")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--alg", choices=("Ed25519", "ES256"), default="Ed25519")
    p = sub.add_parser("bundle", help="build a signed rule bundle")
    p.add_argument("packs", nargs="+", type=Path)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("-o", "--out", type=Path, required=True)
    p = sub.add_parser("inspect", help="show a bundle; verify it with --pub")
    p.add_argument("bundle", type=Path)
    p.add_argument("--pub", type=Path)
    args = parser.parse_args(argv)
    try:
        return int(_COMMANDS[args.command](args))
    except (RuleLoadError, ScenarioError, BundleRejected) as exc:
        print(f"veritrail rules {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"veritrail rules {args.command}: {exc.strerror or exc} ({getattr(exc, 'filename', '')})", file=sys.stderr)
        return 1


def _check(args: argparse.Namespace) -> int:
    status = 0
    for path in args.packs:
        try:
            pack = load_pack_file(path)
        except RuleLoadError as exc:
            print(f"FAIL {exc}")
            status = 1
            continue
        blocking = sum(1 for r in pack.rules if r.action != "alert" and r.enforce_safe)
        print(f"ok   {path}: pack {pack.name!r} for {', '.join(pack.device_classes)}: "
              f"{len(pack.rules)} rules ({blocking} may block/defer in enforce mode)")
        for r in pack.rules:
            if r.action != "alert" and not r.enforce_safe:
                print(f"     note: {r.id} has action {r.action} but is not enforce_safe: it only alerts")
    return status


def _test(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise ScenarioError("give at least one PACK and then the SCENARIO")
    *pack_paths, scenario_path = args.paths
    scenario = load_scenario(scenario_path)
    packs = [load_pack_file(p) for p in pack_paths]
    engine = Engine(RuleSet.build(packs, scenario.device_class, 0), device_class=scenario.device_class, mode=args.mode)
    out = replay(scenario, engine)
    print(f"scenario {scenario.source}: {scenario.kind} for {scenario.rule} ({scenario.device_class}, "
          f"{len(scenario.steps)} steps, mode {args.mode}) {scenario.title}")
    for line in out.lines:
        print(line)
    fired = ", ".join(f"{r} x{n}" for r, n in sorted(out.fired.items())) or "none"
    print(f"fired: {fired}")
    for failure in out.expect_failures:
        print(f"expectation failed: {failure}")
    errors = {k: v for k, v in engine.counters.items() if k.startswith("eval_error")}
    if errors:
        print(f"evaluation errors: {errors}")
    verdict = "PASS" if out.passed else "FAIL"
    want = "fires" if scenario.kind == "attack" else "does not fire"
    print(f"{verdict}: {scenario.rule} {want}")
    return 0 if out.passed else 1


def _keygen(args: argparse.Namespace) -> int:
    from agent.core.keys import generate_signer
    signer = generate_signer(args.alg)
    secret = {"format": KEY_FORMAT, "alg": signer.alg, "kid": signer.kid,
              "private": signer.private_bytes().hex(), "public": signer.public_bytes().hex()}
    public = {k: secret[k] for k in ("format", "alg", "kid", "public")}
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(secret, f)
    pub = args.out.with_name(args.out.name + ".pub")
    pub.write_text(json.dumps(public))
    print(f"fleet key {signer.kid} ({signer.alg}): {args.out} (keep secret), {pub} (for devices)")
    return 0


def _read_key(path: Path, *, private: bool) -> Any:
    from agent.core.keys import PublicKey, load_signer
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != KEY_FORMAT:
            raise ValueError("not a veritrail fleet key file")
        if private:
            return load_signer(doc["alg"], bytes.fromhex(doc["private"]))
        return PublicKey.from_bytes(doc["alg"], bytes.fromhex(doc["public"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleRejected(f"{path}: unusable key file ({exc})") from None


def read_public_key(path: Path) -> Any:
    """The fleet public key from a FLEETKEY.pub file (what the device is provisioned with)."""
    return _read_key(path, private=False)


def _bundle(args: argparse.Namespace) -> int:
    from .bundle import build_bundle
    texts = {}
    for path in args.packs:
        load_pack_file(path)  # every rule must compile before we sign anything
        texts[path.name] = path.read_text(encoding="utf-8")
    signer = _read_key(args.key, private=True)
    message = build_bundle(texts, version=args.version, signer=signer, created_ms=int(time.time() * 1000))
    args.out.write_bytes(message)
    print(f"bundle v{args.version}: {len(texts)} pack(s), {len(message)} bytes, signed by {signer.kid} -> {args.out}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from .bundle import open_bundle
    key = read_public_key(args.pub) if args.pub else None
    version, created, texts = open_bundle(args.bundle.read_bytes(), key)
    print(f"bundle v{version}, created {created} ms, signature {'verified' if key else 'NOT checked (no --pub)'}")
    for name, text in sorted(texts.items()):
        print(f"  {name}: {len(text)} chars")
    return 0


_COMMANDS = {"check": _check, "test": _test, "keygen": _keygen, "bundle": _bundle, "inspect": _inspect}
