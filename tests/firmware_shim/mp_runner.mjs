// Run Python code under real MicroPython (the WebAssembly port from npm) with the
// portable firmware_shim modules mounted at /lib/firmware_shim.
//   node mp_runner.mjs SHIM_DIR < script.py
// The script's stdout goes to stdout; a Python exception exits 1 with its text on stderr.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const shimDir = process.argv[2];
// CPython-only modules are left out on purpose: importing them must not be needed.
const cpythonOnly = new Set(["testing.py"]);
const code = readFileSync(0, "utf8");
let out = "";
const mp = await loadMicroPython({
  heapsize: 8 * 1024 * 1024,
  stdout: (line) => { out += line + "\n"; },
  stderr: (line) => { process.stderr.write(line + "\n"); },
});
mp.FS.mkdirTree("/lib/firmware_shim");
for (const name of readdirSync(shimDir)) {
  if (name.endsWith(".py") && !cpythonOnly.has(name)) {
    mp.FS.writeFile(join("/lib/firmware_shim", name), readFileSync(join(shimDir, name)));
  }
}
try {
  mp.runPython(code);
} catch (error) {
  process.stdout.write(out);
  process.stderr.write(`MicroPython error: ${error.type || error.name}: ${error.message}\n`);
  process.exit(1);
}
process.stdout.write(out);
