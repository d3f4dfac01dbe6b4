// The netdsl extension: .net highlighting comes from the grammar in package.json; this starts the
// language server (`netdsl lsp`, over stdio) for .net files, saved or not.
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace
    .getConfiguration("netdsl")
    .get("server.command", ["netdsl", "lsp"]);
  const serverOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "netdsl" },
      { scheme: "untitled", language: "netdsl" },
    ],
  };
  client = new LanguageClient("netdsl", "netdsl language server", serverOptions, clientOptions);
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
