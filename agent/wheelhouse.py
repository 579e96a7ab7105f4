"""`veritrail agent wheelhouse --out DIR`: everything a device needs to install the agent
offline, as wheels for each target CPU (Python 3.11 by default, glibc manylinux).

    veritrail agent wheelhouse --out DIR [--target aarch64 --target armv7l] [--python 3.11] [--extra zstd]
    # on the device, no network:
    pip install --no-index --find-links DIR/aarch64 veritrail

DIR/TARGET/ holds the veritrail wheel and every dependency's wheel for that target
(``pip download --only-binary=:all: --platform ...``); DIR/report.json says per target what
was fetched and which dependency has no wheel for it (then that target is incomplete: build
that wheel for the target, or install the package from the device's distribution).
Exit status: 0 every target complete, 3 some dependency has no wheel, 1 pip or the build failed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = ["PLATFORMS", "runtime_requirements", "build", "main", "add_parser", "cmd_wheelhouse"]

# glibc manylinux tags, oldest first; pip takes any of them
PLATFORMS: dict[str, list[str]] = {
    "aarch64": ["manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_31_aarch64",
                "manylinux_2_34_aarch64"],
    "armv7l": ["manylinux2014_armv7l", "manylinux_2_28_armv7l", "manylinux_2_31_armv7l", "manylinux_2_34_armv7l"],
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"],
}
ROOT = Path(__file__).resolve().parents[1]
# Packages with a pure-Python build: when a target has no wheel, one is built from the sdist
# (slower than the C extension, but it installs anywhere).
PURE_BUILD_ENV = {"msgpack": {"MSGPACK_PUREPYTHON": "1"}}
_MISSING = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-\[\]]+)")


def _missing_names(stderr: str) -> list[str]:
    """Package names pip found no wheel for: "No matching distribution found for X", and the
    resolver's "... no matching distributions available for your environment:" list."""
    names = _MISSING.findall(stderr)
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if "no matching distributions available for your environment" in line:
            for follow in lines[i + 1:]:
                if not follow.startswith("    ") or not follow.strip():
                    break
                names.append(follow.strip())
    return list(dict.fromkeys(names))


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower()


def _pure_wheel(dest: Path, req: str) -> bool:
    import os
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
                          "--no-binary", _name(req), "-w", str(dest), req], capture_output=True, text=True,
                         timeout=900, env={**os.environ, **PURE_BUILD_ENV[_name(req)]})
    return res.returncode == 0 and any(dest.glob(f"{_name(req)}-*-py3-none-any.whl"))


def runtime_requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """veritrail's own install requirements (plus the named extras), from its metadata."""
    out = []
    for req in metadata.requires("veritrail") or []:
        spec, _, marker = req.partition(";")
        m = re.search(r'extra\s*==\s*"([^"]+)"', marker)
        if m is None or m.group(1) in extras:
            out.append(spec.strip())
    return out


def _pip_download(dest: Path, target: str, python: str, requirements: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--abi", "cp" + python.replace(".", ""),
           "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for plat in PLATFORMS[target]:
        cmd += ["--platform", plat]
    return subprocess.run([*cmd, *requirements], capture_output=True, text=True, timeout=900)


def build(out: Path, targets: list[str], python: str = "3.11", extras: tuple[str, ...] = (),
          progress=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # veritrail itself: a pure-Python wheel from this source
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
                                "-w", tmp, str(ROOT)], capture_output=True, text=True, timeout=900)
        if built.returncode != 0:
            raise RuntimeError(f"building the veritrail wheel failed: {built.stderr[-1000:]}")
        own = sorted(Path(tmp).glob("veritrail-*.whl"))
        if not own:
            raise RuntimeError("pip wheel made no veritrail wheel")
        requirements = runtime_requirements(extras)
        report: dict = {"python": python, "requirements": requirements, "targets": {}}
        for target in targets:
            dest = out / target
            dest.mkdir(exist_ok=True)
            shutil.copy(own[-1], dest)
            progress(f"wheelhouse {target}: pip download {' '.join(requirements)}")
            res = _pip_download(dest, target, python, requirements)
            missing: list[str] = []
            if res.returncode != 0:  # find every requirement (with its dependencies) that has no wheel
                for req in requirements:
                    one = _pip_download(dest, target, python, [req])
                    if one.returncode != 0:
                        _pip_download(dest, target, python, ["--no-deps", req])  # its own wheel, if it has one
                        found = [n for n in _missing_names(one.stdout + one.stderr) if not req.startswith(n)]
                        missing.append(f"{req} (no wheel: {', '.join(found)})" if found else req)
            pure = [req for req in missing if _name(req) in PURE_BUILD_ENV and _pure_wheel(dest, req)]
            missing = [req for req in missing if req not in pure]
            wheels = sorted(p.name for p in dest.glob("*.whl"))
            report["targets"][target] = {"complete": not missing, "missing": missing, "wheels": wheels,
                                         "pure_python_built": pure, "platforms": PLATFORMS[target]}
            if pure:
                progress(f"wheelhouse {target}: built pure-Python wheels (slower) for {', '.join(pure)}")
            progress(f"wheelhouse {target}: {len(wheels)} wheels" + (f"; NO WHEEL: {', '.join(missing)}"
                                                                      if missing else ", complete"))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def add_parser(sub: argparse._SubParsersAction) -> None:
    _arguments(sub.add_parser("wheelhouse", help="wheels of the agent and its dependencies for offline device installs"))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="veritrail agent wheelhouse", description=__doc__.split("\n\n")[0])
    _arguments(p)
    return cmd_wheelhouse(p.parse_args(argv))


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="folder for TARGET/*.whl and report.json")
    p.add_argument("--target", action="append", choices=sorted(PLATFORMS),
                   help="CPU to fetch for (repeat; default: aarch64 and armv7l)")
    p.add_argument("--python", default="3.11", help="the device's Python, MAJOR.MINOR (default 3.11)")
    p.add_argument("--extra", action="append", default=[], choices=("zstd",), help="optional extras to include")


def cmd_wheelhouse(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"3\.\d{1,2}", args.python):
        print(f"veritrail agent wheelhouse: --python {args.python!r} must be like 3.11", file=sys.stderr)
        return 2
    try:
        report = build(args.out, args.target or ["aarch64", "armv7l"], args.python, tuple(args.extra),
                       progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"veritrail agent wheelhouse: {exc}", file=sys.stderr)
        return 1
    for target, t in report["targets"].items():
        print(f"{target}: {'complete' if t['complete'] else 'INCOMPLETE, no wheel for: ' + ', '.join(t['missing'])}"
              f" ({len(t['wheels'])} wheels in {args.out / target})")
    return 0 if all(t["complete"] for t in report["targets"].values()) else 3
