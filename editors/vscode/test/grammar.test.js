// The TextMate grammar, run by vscode-textmate with the Oniguruma regex engine VS Code itself uses,
// on a line whose every token is checked, and on every sample .net file of the repository.
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const test = require("node:test");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const here = path.join(__dirname, "..");
const root = path.join(here, "..", "..");

async function loadGrammar() {
  const wasm = fs.readFileSync(path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (text) => new oniguruma.OnigString(text),
    }),
    loadGrammar: async (scopeName) => {
      if (scopeName !== "source.netdsl") return null;
      const file = path.join(here, "syntaxes", "netdsl.tmLanguage.json");
      return vsctm.parseRawGrammar(fs.readFileSync(file, "utf8"), file);
    },
  });
  return registry.loadGrammar("source.netdsl");
}

const grammar = loadGrammar();

// [text, innermost scope] for every token that is not blank
async function tokenize(text) {
  const g = await grammar;
  let state = vsctm.INITIAL;
  const out = [];
  for (const line of text.split("\n")) {
    const result = g.tokenizeLine(line, state);
    for (const token of result.tokens) {
      const value = line.slice(token.startIndex, token.endIndex);
      if (value.trim() !== "") out.push([value, token.scopes[token.scopes.length - 1]]);
    }
    state = result.ruleStack;
  }
  return out;
}

test("a line is split into its tokens", async () => {
  const text =
    'use "vgg.net"  # blocks\ndef block(n, c=64) = [(conv3-c)*n - pool]\n' +
    "net D input 3x224x224 = p: block(2) - cat{ @p | conv1-{2*c}/2(pad=0, bias=false) } - fc4096";
  assert.deepEqual(await tokenize(text), [
    ["use", "keyword.other.netdsl"], ['"vgg.net"', "string.quoted.double.netdsl"],
    ["# blocks", "comment.line.number-sign.netdsl"],
    ["def", "keyword.other.declaration.netdsl"], ["block", "entity.name.function.netdsl"],
    ["(", "punctuation.bracket.netdsl"], ["n", "variable.other.netdsl"], [",", "punctuation.bracket.netdsl"],
    ["c", "variable.parameter.netdsl"], ["=", "keyword.operator.assignment.netdsl"],
    ["64", "constant.numeric.integer.netdsl"], [")", "punctuation.bracket.netdsl"],
    ["=", "keyword.operator.netdsl"], ["[", "punctuation.bracket.netdsl"], ["(", "punctuation.bracket.netdsl"],
    ["conv3-c", "support.function.op.slide.netdsl"], [")", "punctuation.bracket.netdsl"],
    ["*", "keyword.operator.netdsl"], ["n", "variable.other.netdsl"], ["-", "keyword.operator.netdsl"],
    ["pool", "support.function.op.netdsl"], ["]", "punctuation.bracket.netdsl"],
    ["net", "keyword.other.declaration.netdsl"], ["D", "entity.name.function.netdsl"],
    ["input", "keyword.other.netdsl"], ["3x224x224", "constant.numeric.shape.netdsl"],
    ["=", "keyword.operator.netdsl"], ["p", "entity.name.label.netdsl"],
    [":", "punctuation.separator.label.netdsl"], ["block", "variable.other.netdsl"],
    ["(", "punctuation.bracket.netdsl"], ["2", "constant.numeric.integer.netdsl"],
    [")", "punctuation.bracket.netdsl"], ["-", "keyword.operator.netdsl"],
    ["cat", "keyword.control.merge.netdsl"], ["{", "punctuation.section.braces.begin.netdsl"],
    ["@", "keyword.operator.reference.netdsl"], ["p", "variable.other.label.netdsl"],
    ["|", "keyword.operator.netdsl"], ["conv1-{2*c}/2", "support.function.op.slide.netdsl"],
    ["(", "punctuation.bracket.netdsl"], ["pad", "variable.parameter.netdsl"],
    ["=", "keyword.operator.assignment.netdsl"], ["0", "constant.numeric.integer.netdsl"],
    [",", "punctuation.bracket.netdsl"], ["bias", "variable.parameter.netdsl"],
    ["=", "keyword.operator.assignment.netdsl"], ["false", "constant.language.netdsl"],
    [")", "punctuation.bracket.netdsl"], ["}", "punctuation.bracket.netdsl"],
    ["-", "keyword.operator.netdsl"], ["fc4096", "support.function.op.slide.netdsl"],
  ]);
});

test("floats, and a comment that ends with its line", async () => {
  assert.deepEqual(await tokenize("dropout(0.5) # p\n- lrn(alpha=1e-4)"), [
    ["dropout", "support.function.op.netdsl"], ["(", "punctuation.bracket.netdsl"],
    ["0.5", "constant.numeric.float.netdsl"], [")", "punctuation.bracket.netdsl"],
    ["# p", "comment.line.number-sign.netdsl"], ["-", "keyword.operator.netdsl"],
    ["lrn", "support.function.op.netdsl"], ["(", "punctuation.bracket.netdsl"],
    ["alpha", "variable.parameter.netdsl"], ["=", "keyword.operator.assignment.netdsl"],
    ["1e-4", "constant.numeric.float.netdsl"], [")", "punctuation.bracket.netdsl"],
  ]);
});

test("non-square, depthwise and adaptive layers", async () => {
  assert.deepEqual(await tokenize("conv1x7-192 - dwconv3/2 - dwconv1x{k} - adaptive_avgpool(7) - gmp"), [
    ["conv1x7-192", "support.function.op.slide.netdsl"], ["-", "keyword.operator.netdsl"],
    ["dwconv3/2", "support.function.op.slide.netdsl"], ["-", "keyword.operator.netdsl"],
    ["dwconv1x{k}", "support.function.op.slide.netdsl"], ["-", "keyword.operator.netdsl"],
    ["adaptive_avgpool", "support.function.op.netdsl"], ["(", "punctuation.bracket.netdsl"],
    ["7", "constant.numeric.integer.netdsl"], [")", "punctuation.bracket.netdsl"],
    ["-", "keyword.operator.netdsl"], ["gmp", "support.function.op.netdsl"],
  ]);
});

test("a choice: if, then, else, comparisons and logic words", async () => {
  assert.deepEqual(await tokenize("if s == 1 and not in_channels != c then relu else tanh"), [
    ["if", "keyword.control.conditional.netdsl"], ["s", "variable.other.netdsl"],
    ["==", "keyword.operator.netdsl"], ["1", "constant.numeric.integer.netdsl"],
    ["and", "keyword.operator.logical.netdsl"], ["not", "keyword.operator.logical.netdsl"],
    ["in_channels", "variable.other.netdsl"], ["!=", "keyword.operator.netdsl"],
    ["c", "variable.other.netdsl"], ["then", "keyword.control.conditional.netdsl"],
    ["relu", "support.function.op.netdsl"], ["else", "keyword.control.conditional.netdsl"],
    ["tanh", "support.function.op.netdsl"],
  ]);
});

test("true division and an indexed repeat", async () => {
  assert.deepEqual(await tokenize("block(0.1*i/n)*n for i - conv3-64/2"), [
    ["block", "variable.other.netdsl"], ["(", "punctuation.bracket.netdsl"],
    ["0.1", "constant.numeric.float.netdsl"], ["*", "keyword.operator.netdsl"],
    ["i", "variable.other.netdsl"], ["/", "keyword.operator.netdsl"], ["n", "variable.other.netdsl"],
    [")", "punctuation.bracket.netdsl"], ["*", "keyword.operator.netdsl"], ["n", "variable.other.netdsl"],
    ["for", "keyword.control.loop.netdsl"], ["i", "variable.other.netdsl"], ["-", "keyword.operator.netdsl"],
    ["conv3-64/2", "support.function.op.slide.netdsl"],
  ]);
});

const samples = [
  ...fs.readdirSync(path.join(root, "networks")).map((f) => path.join(root, "networks", f)),
  ...fs.readdirSync(path.join(root, "examples")).map((f) => path.join(root, "examples", f)),
  ...fs.readdirSync(path.join(root, "tests", "data", "editor")).map((f) => path.join(root, "tests", "data", "editor", f)),
].filter((f) => f.endsWith(".net"));

test("the samples are found", () => {
  assert.ok(samples.length >= 12, `only ${samples.length} .net files`);
});

for (const file of samples) {
  test(`every character of ${path.relative(root, file)} gets a scope`, async () => {
    const text = fs.readFileSync(file, "utf8");
    const unscoped = (await tokenize(text)).filter(([, scope]) => scope === "source.netdsl");
    assert.deepEqual(unscoped, []);
    const names = (await tokenize(text)).filter(([, scope]) =>
      scope.startsWith("support.function.op") || scope === "variable.other.netdsl");
    assert.ok(names.length > 0, "no op or definition call highlighted");
  });
}

test("the grammar knows the same ops as the Pygments lexer", () => {
  const raw = JSON.parse(fs.readFileSync(path.join(here, "syntaxes", "netdsl.tmLanguage.json"), "utf8"));
  const rule = raw.patterns.find((p) => p.name === "support.function.op.netdsl");
  const ops = rule.match.replace(/^\\b\(\?:/, "").replace(/\)\\b$/, "").split("|").sort();
  const lexer = fs.readFileSync(path.join(root, "netdsl", "lexer.py"), "utf8");
  const listed = lexer.match(/OP_NAMES = \(([^)]*)\)/)[1].match(/"([a-z][a-z0-9_]*)"/g).map((s) => s.slice(1, -1)).sort();
  assert.deepEqual(ops, listed);
});
