// Builds netdsl/serve/static/playground.js and, beside it, LICENSES.txt: the licence of every npm
// package inside the bundle. Deterministic (no timestamps, sorted), so CI can compare the result
// with the committed files (.ci/bundle).
import { build } from "esbuild";
import { readFileSync, writeFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const out = "../../netdsl/serve/static";
const result = await build({
  entryPoints: ["src/main.js"], bundle: true, format: "iife", target: "es2020", minify: true,
  legalComments: "none", charset: "utf8", metafile: true, outfile: `${out}/playground.js`,
  logLevel: "warning",
});

const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.add(match[1]);
}
const sections = [...packages].sort().map((name) => {
  const folder = join("node_modules", name);
  const { version, license } = JSON.parse(readFileSync(join(folder, "package.json"), "utf8"));
  const file = readdirSync(folder).find((f) => /^licen[cs]e/i.test(f));
  if (!file) throw new Error(`${name} has no licence file`);
  return `${name} ${version} (${license})\n\n${readFileSync(join(folder, file), "utf8").trim()}\n`;
});
writeFileSync(`${out}/LICENSES.txt`,
  "Third-party code bundled in playground.js (built from editors/playground by `npm run build`).\n\n" +
  sections.join(`\n${"-".repeat(72)}\n\n`));
