// The browser side of `netdsl serve`: a CodeMirror 6 editor whose text is checked by the server as
// you type; the drawing, the summary table and the diagnostics follow, and hovering links them.
// All user text reaches the page through textContent or CodeMirror; SVG is sanitised before use.
import { EditorState, StateEffect, StateField } from "@codemirror/state";
import { EditorView, Decoration, keymap, lineNumbers, highlightActiveLine } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from "@codemirror/language";
import { setDiagnostics, lintGutter } from "@codemirror/lint";
import { netdslLanguage } from "./netdsl-language.js";

const DEBOUNCE_MS = 150;
const token = document.querySelector('meta[name="netdsl-token"]').content;
const nonce = document.querySelector('meta[name="netdsl-nonce"]').content;
const $ = (id) => document.getElementById(id);

const page = {
  view: null, result: null, depth: 1, opened: [], net: null, seq: 0, shown: 0, timer: null,
  file: null, download: "network.net", writable: false,
  focus: null,  // the first node of the box last clicked: kept in view once it opens
  explaining: null, explanations: new Map(),  // the layer whose arithmetic is shown; answers
};

async function api(path, body) {
  const options = { headers: { "X-NetDSL-Token": token } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// -- source highlighting ------------------------------------------------------------------------
const setLit = StateEffect.define();
const litMark = Decoration.mark({ class: "cm-netdsl-lit" });
const litField = StateField.define({
  create: () => Decoration.none,
  update(marks, tr) {
    marks = marks.map(tr.changes);
    for (const effect of tr.effects) {
      if (effect.is(setLit)) {
        const length = tr.state.doc.length;
        const ranges = effect.value
          .filter(([from, to]) => to > from && to <= length)
          .sort((a, b) => a[0] - b[0])
          .map(([from, to]) => litMark.range(from, to));
        marks = Decoration.set(ranges, true);
      }
    }
    return marks;
  },
  provide: (field) => EditorView.decorations.from(field),
});

function lightSource(ranges) {
  page.view.dispatch({ effects: setLit.of(ranges) });
  if (ranges.length) {
    page.view.dispatch({ effects: EditorView.scrollIntoView(ranges[0][0], { y: "nearest" }) });
  }
}

// -- linking drawing, table and source ----------------------------------------------------------
function lightElements(elementIds, rowIds) {
  for (const lit of document.querySelectorAll(".lit")) lit.classList.remove("lit");
  for (const id of elementIds) document.getElementById(id)?.classList.add("lit");
  for (const id of rowIds) document.getElementById(`row${id}`)?.classList.add("lit");
}

function spansOfElement(elementId) {
  const result = page.result;
  if (elementId.startsWith("box")) {
    const box = result.boxes[elementId];
    return box && box.span ? [box.span] : [];
  }
  const node = result.nodes[Number(elementId.slice(2))];
  return node && node.span ? [node.span] : [];
}

function rowsOfElement(elementId) {
  return page.result.owners.flatMap((owner, id) => (owner === elementId ? [id] : []));
}

function onElementHover(elementId) {
  lightSource(spansOfElement(elementId));
  lightElements([elementId], rowsOfElement(elementId));
  if (elementId.startsWith("ir")) showExplanation(Number(elementId.slice(2)));
}

function onRowHover(nodeId) {
  const node = page.result.nodes[nodeId];
  lightSource(node && node.span ? [node.span] : []);
  const owner = page.result.owners[nodeId];
  lightElements(owner ? [owner] : [], [nodeId]);
  showExplanation(nodeId);
}

// The worked arithmetic of one layer (netdsl summary --explain), asked for when a layer is hovered
// or under the cursor; answers are kept until the next check.
async function showExplanation(nodeId) {
  const result = page.result;
  if (!result || !result.ok) return;
  page.explaining = nodeId;
  const key = `${page.shown}:${result.net}:${nodeId}`;
  let explanation = page.explanations.get(key);
  if (explanation === undefined) {
    try {
      explanation = await api("/api/explain", {
        text: page.view.state.doc.toString(), net: result.net, node: nodeId,
      });
    } catch (error) {
      explanation = { text: "" };
    }
    page.explanations.set(key, explanation);
  }
  if (page.explaining === nodeId && page.result === result) {
    $("explain").textContent = explanation.text;
  }
}

function onCursor(position) {
  // the layers made by the innermost piece of source around the cursor: in `block(16)` its layers,
  // not also the input node whose span is the whole chain
  const result = page.result;
  if (!result || !result.ok) return;
  const width = (node) => Math.min(...[node.span, ...node.frames]
    .filter((range) => range && range[0] <= position && position <= range[1])
    .map(([from, to]) => to - from));
  const widths = result.nodes.map(width);
  const narrowest = Math.min(...widths);
  const ids = narrowest === Infinity ? [] : result.nodes.filter((n, i) => widths[i] === narrowest)
    .map((n) => n.id);
  const elements = [...new Set(ids.map((id) => result.owners[id]).filter(Boolean))];
  lightElements(elements, ids);
  if (ids.length) document.getElementById(`row${ids[0]}`)?.scrollIntoView({ block: "nearest" });
  if (ids.length && ids[0] !== 0) showExplanation(ids[0]);
}

// -- showing a result ---------------------------------------------------------------------------
const SVG_NS = "http://www.w3.org/2000/svg";

function sanitisedSvg(text) {
  const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = parsed.documentElement;
  if (root.namespaceURI !== SVG_NS || root.localName !== "svg") return null;
  for (const bad of root.querySelectorAll("script, foreignObject, iframe, object, embed, use")) bad.remove();
  for (const element of [root, ...root.querySelectorAll("*")]) {
    for (const attribute of [...element.attributes]) {
      const name = attribute.name.toLowerCase();
      if (name.startsWith("on") || name === "style" || name.endsWith("href")) {
        element.removeAttribute(attribute.name);
      }
    }
  }
  return document.importNode(root, true);
}

function showDrawing(result) {
  const holder = $("drawing");
  if (!result.svg) return;
  const svg = sanitisedSvg(result.svg);
  if (!svg) return;
  holder.replaceChildren(svg);
  for (const id of ["drawing", "table-wrap", "totals"]) $(id).classList.remove("stale");
  for (const element of svg.querySelectorAll("g.node")) {
    const id = element.id;
    if (!/^(ir|box)\d+$/.test(id)) continue;
    if (id.startsWith("box")) {
      element.classList.add("box");
      element.addEventListener("click", () => {
        // open this box only; a box and the first box inside it share an id, so each click
        // on it opens one more level (the server uses each mention once, outermost first)
        page.opened.push(Number(id.slice(3)));
        page.focus = Number(id.slice(3));
        check();
      });
    }
    element.addEventListener("mouseenter", () => onElementHover(id));
    element.addEventListener("mouseleave", () => { lightSource([]); lightElements([], []); });
  }
}

const number = (n) => Number(n).toLocaleString("en-US");

function cell(row, text, numeric = false) {
  const td = row.insertCell();
  td.textContent = text;
  if (numeric) td.className = "n";
}

function showSummary(result) {
  const summary = result.summary;
  $("totals").textContent =
    `${summary.network}: ${summary.input.join("x")} -> ${summary.output.join("x")} · ` +
    `${number(summary.params)} params · ${number(summary.macs)} MACs · ` +
    `${number(summary.activations)} activations`;
  $("totals").dataset.params = String(summary.params);
  const body = document.createElement("tbody");
  summary.layers.forEach((layer, id) => {
    const row = body.insertRow();
    row.id = `row${id}`;
    cell(row, layer.name);
    cell(row, layer.act !== "none" ? `${layer.notation}+${layer.act}` : layer.notation);
    cell(row, layer.shape.join("x"));
    cell(row, number(layer.params), true);
    cell(row, number(layer.macs), true);
    cell(row, String(layer.rf), true);
    row.addEventListener("mouseenter", () => onRowHover(id));
    row.addEventListener("mouseleave", () => { lightSource([]); lightElements([], []); });
  });
  $("summary").tBodies[0].replaceWith(body);
}

function showDiagnostics(result) {
  const doc = page.view.state.doc;
  const clamp = (n) => Math.max(0, Math.min(n, doc.length));
  const placed = result.diagnostics.map((d) => ({
    from: clamp(d.from), to: clamp(Math.max(d.to, d.from)),
    severity: d.severity === "error" ? "error" : d.severity === "warning" ? "warning" : "info",
    message: [d.message, ...d.notes.map((n) => `note: ${n}`)].join("\n"),
  }));
  page.view.dispatch(setDiagnostics(page.view.state, placed));
  const list = $("diagnostics");
  list.replaceChildren(...result.diagnostics.map((d) => {
    const line = document.createElement("div");
    line.className = d.severity;
    const where = d.placed ? (() => {
      const l = doc.lineAt(clamp(d.from));
      return `${l.number}:${clamp(d.from) - l.from + 1}: `;
    })() : "";
    line.textContent = `${where}${d.severity}: ${d.message}`;
    return line;
  }));
}

function showNets(result) {
  const select = $("net");
  const names = result.nets;
  const current = [...select.options].map((o) => o.value);
  if (names.join("\n") !== current.join("\n")) {
    select.replaceChildren(...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      return option;
    }));
  }
  if (result.net) select.value = result.net;
  select.disabled = names.length < 2;
}

function show(result) {
  page.result = result;
  page.explanations.clear();
  showDiagnostics(result);
  showNets(result);
  $("depth").textContent = result.depth === null ? "all" : String(result.depth);
  if (result.ok) {
    showSummary(result);
    showDrawing(result);
    onCursor(page.view.state.selection.main.head);
    if (page.focus !== null) {  // the opened box: what it became, in view
      const owner = result.owners[page.focus];
      page.focus = null;
      document.getElementById(owner)?.scrollIntoView({ block: "center", inline: "center" });
    }
  } else {
    for (const id of ["drawing", "table-wrap", "totals"]) $(id).classList.add("stale");
  }
}

async function check() {
  const seq = ++page.seq;
  const started = performance.now();
  status("checking…");
  try {
    const result = await api("/api/check", {
      text: page.view.state.doc.toString(), net: page.net, depth: page.depth, opened: page.opened, seq,
    });
    if (seq < page.shown) return;  // an older answer arriving late
    page.shown = seq;
    show(result);
    if (seq === page.seq) {
      const errors = result.diagnostics.filter((d) => d.severity === "error").length;
      status(`${errors ? `${errors} error` : "ok"} · ${Math.round(performance.now() - started)} ms`,
             errors > 0);
    }
  } catch (error) {
    status(String(error.message || error), true);
  }
}

function scheduleCheck() {
  clearTimeout(page.timer);
  page.timer = setTimeout(check, DEBOUNCE_MS);
}

function setText(text) {
  page.view.dispatch({ changes: { from: 0, to: page.view.state.doc.length, insert: text } });
}

// -- start --------------------------------------------------------------------------------------
async function save() {
  if (!page.writable) return true;
  try {
    const saved = await api("/api/save", { text: page.view.state.doc.toString() });
    status(`saved ${saved.saved}`);
  } catch (error) {
    status(String(error.message || error), true);
  }
  return true;
}

async function start() {
  const state = await api("/api/state");
  page.file = state.file;
  page.download = state.file || "network.net";
  page.view = new EditorView({
    parent: $("editor"),
    state: EditorState.create({
      doc: state.text,
      extensions: [
        EditorView.cspNonce.of(nonce),
        lineNumbers(), history(), highlightActiveLine(), bracketMatching(), lintGutter(),
        keymap.of([{ key: "Mod-s", run: () => { save(); return true; } },
                   ...defaultKeymap, ...historyKeymap]),
        netdslLanguage, syntaxHighlighting(defaultHighlightStyle), litField,
        EditorView.updateListener.of((update) => {
          if (update.docChanged) scheduleCheck();
          else if (update.selectionSet) onCursor(update.state.selection.main.head);
        }),
      ],
    }),
  });

  const shipped = $("shipped");
  for (const name of state.shipped) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    shipped.append(option);
  }
  shipped.addEventListener("change", async () => {
    if (!shipped.value) return;
    const network = await api(`/api/shipped/${encodeURIComponent(shipped.value)}`);
    page.net = null;
    page.opened = [];
    page.download = `${network.name}.net`;
    setText(network.text);
    shipped.value = "";
  });
  $("net").addEventListener("change", () => { page.net = $("net").value; page.opened = []; check(); });
  $("collapse").addEventListener("click", () => {
    if (page.opened.length) page.opened.pop();  // shut the box opened last
    else page.depth = page.depth === null ? 2 : Math.max(0, page.depth - 1);
    check();
  });
  $("expand-all").addEventListener("click", () => { page.depth = null; page.opened = []; check(); });

  const saveButton = $("save");
  page.writable = state.writable;
  saveButton.disabled = !state.writable;
  saveButton.title = state.writable ? `write ${state.file} (Ctrl+S)` :
    (state.file ? "read-only server" : "no FILE given to netdsl serve");
  if (state.file) saveButton.textContent = `Save ${state.file}`;
  saveButton.addEventListener("click", save);
  $("download").addEventListener("click", () => {
    const blob = new Blob([page.view.state.doc.toString()], { type: "text/plain" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = page.download;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  });
  check();
}

start().catch((error) => status(String(error.message || error), true));
