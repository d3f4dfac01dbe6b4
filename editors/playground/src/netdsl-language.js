// Syntax highlighting for .net files: a CodeMirror StreamLanguage following grammars/netdsl.lark.
import { StreamLanguage } from "@codemirror/language";

const KEYWORDS = new Set(["input", "activation", "use", "def", "net", "if", "then", "else", "for", "and", "or", "not"]);
const VALUE = "(?:[0-9]+|[A-Za-z_][A-Za-z0-9_]*|\\{[^{}\\n]*\\})";
const NUMBER_OR_BRACE = "(?:[0-9]+|\\{[^{}\\n]*\\})";
// conv3-64, conv7-64/2, conv1x7-192, deconv4-21/2, dwconv3/2, maxpool3/2, avgpool7, fc4096, fc{n}:
// one token, as in the grammar
const SLIDE = new RegExp(
  `^(?:conv${NUMBER_OR_BRACE}(?:x${NUMBER_OR_BRACE})?-${VALUE}|deconv${NUMBER_OR_BRACE}-${VALUE}|` +
  `dwconv${NUMBER_OR_BRACE}(?:x${NUMBER_OR_BRACE})?|(?:max|avg)pool${NUMBER_OR_BRACE}|fc${NUMBER_OR_BRACE})` +
  `(?:\\/${VALUE})?(?![A-Za-z0-9_{])`);
const MERGE = /^(?:cat|concat|add|mul)\{/;
const SHAPE = /^[0-9]+(?:x[0-9]+)+(?![A-Za-z0-9_])/;
const NUMBER = /^(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|^[0-9]+(?:[eE][-+]?[0-9]+)?/;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

export const netdslLanguage = StreamLanguage.define({
  name: "netdsl",
  startState: () => ({ afterDef: false }),
  token(stream, state) {
    if (stream.eatSpace()) return null;
    if (stream.match("#")) { stream.skipToEnd(); return "comment"; }
    if (stream.match(/^"[^"\n]*"?/)) return "string";
    if (stream.match(MERGE)) return "keyword";
    if (stream.match(SLIDE)) return "typeName";
    if (stream.match(SHAPE)) return "number";
    if (stream.match(NUMBER)) return "number";
    if (stream.match(/^@[A-Za-z_][A-Za-z0-9_.]*/)) return "labelName";
    const name = stream.match(NAME);
    if (name) {
      const word = name[0];
      if (KEYWORDS.has(word)) { state.afterDef = word === "def" || word === "net"; return "keyword"; }
      if (state.afterDef) { state.afterDef = false; return "definition"; }
      if (stream.match(/^\s*:(?!:)/, false)) return "labelName";
      if (stream.match(/^\s*=(?!=)/, false)) return "propertyName";  // keyword argument
      return "variableName";
    }
    if (stream.match(/^(?:==|!=|<=|>=|\/\/|[-*|%+\/=<>])/)) return "operator";
    stream.next();
    return "punctuation";
  },
  languageData: { commentTokens: { line: "#" } },
});
