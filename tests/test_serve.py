"""netdsl serve, without a browser: the analysis each edit gets, and the server's security model
(token, Host, Origin, CSP, escaping, limits, read-only, saving only FILE), through starlette's
TestClient. The page itself is tested in Chromium by test_serve_browser.py."""
import json
import re
import subprocess
import sys
import zipfile

import pytest

import netdsl
from netdsl.network import read_source, resolve_path, shipped_names

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from netdsl.serve.analysis import SERVE_LIMITS, analyse  # noqa: E402
from netdsl.serve.app import allowed_hosts, create_app  # noqa: E402

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
ORIGIN = {"Origin": BASE}


def client_for(file=None, host="127.0.0.1", allow_save=False, base=BASE):
    app, token = create_app(file, host=host, port=PORT, allow_save=allow_save)
    return TestClient(app, base_url=base), token


def post(client, token, path, body, **headers):
    return client.post(path, content=json.dumps(body),
                       headers={"X-NetDSL-Token": token, "Content-Type": "application/json",
                                **ORIGIN, **headers})


# -- the analysis -------------------------------------------------------------------------------

def test_analysis_of_resnet152_matches_the_library():
    path, _ = resolve_path("resnet")
    result = analyse(read_source(path), net="resnet152", path=path)
    network = netdsl.load("resnet", net="resnet152")
    assert result["ok"] and result["net"] == "resnet152"
    assert "resnet50" in result["nets"] and len(result["nets"]) == 15  # with ResNeXt and Wide ResNet
    assert result["summary"]["params"] == network.params == 60_192_808
    assert result["summary"]["macs"] == network.macs
    assert [layer["name"] for layer in result["summary"]["layers"]] == \
        [n.name for n in network.graph.nodes]
    assert [n["id"] for n in result["nodes"]] == list(range(len(network.graph)))
    # every node is drawn by exactly one element; boxes partition runs of nodes
    assert len(result["owners"]) == len(network.graph) and all(result["owners"])
    assert "bottleneck(256) x35" in result["svg"]
    for element, box in result["boxes"].items():
        members = [network.graph[i].name for i in range(box["first"], box["last"] + 1)]
        assert all(result["owners"][i] == element for i in range(box["first"], box["last"] + 1))
        prefix = members[0].split(".")[0]
        assert all(name.startswith(prefix + ".") for name in members), element


def test_the_same_text_is_parsed_once_for_another_depth_or_net(monkeypatch):
    import netdsl.serve.analysis as analysis
    parses = []
    monkeypatch.setattr(analysis, "parse_module",
                        lambda *args: parses.append(1) or netdsl.parse_module(*args))
    text = "input 3x32x32\ndef b(c) = conv3-c - pool\nnet one = b(8) - fc10\nnet two = b(4) - fc2\n"
    first = analyse(text, depth=0)
    assert first["net"] == "one" and "box1" in first["boxes"] and len(parses) == 1
    again = analyse(text, depth=1)
    assert "box1" not in again["boxes"] and again["owners"][1] == "ir1" and len(parses) == 1
    two = analyse(text, net="two", depth=1)
    assert two["summary"]["params"] == 3 * 9 * 4 + 4 + 4 * 16 * 16 * 2 + 2 and len(parses) == 1
    analyse(text + " ", depth=1)
    assert len(parses) == 2


def test_spans_point_at_the_source_text():
    text = "input 3x32x32\nnet small = conv3-8 - pool - fc10\n"
    result = analyse(text)
    conv = result["nodes"][1]
    assert text[conv["span"][0]:conv["span"][1]] == "conv3-8"
    assert result["owners"][1] == "ir1" and 'id="ir1"' in result["svg"]


def test_calls_are_frames_and_boxes_point_at_the_call():
    text = "input 3x32x32\ndef block(c) = conv3-c - pool\nblock(8) - block(16) - fc10\n"
    result = analyse(text, depth=0)
    frames = result["nodes"][1]["frames"]
    assert [text[a:b] for a, b in frames] == ["block(8)"]
    box = result["boxes"]["box1"]
    assert text[box["span"][0]:box["span"][1]] == "block(8)"
    assert result["owners"][:4] == ["ir0", "box1", "box1", "box3"]


def test_an_error_is_a_placed_diagnostic_in_utf16_units():
    text = "input 3x8x8\n# é and 😀 before it\nconv3-8 - pool - pool - pool - pool\n"
    result = analyse(text)
    assert not result["ok"] and result["svg"] is None
    [error] = result["diagnostics"]
    assert error["severity"] == "error" and "empty" in error["message"] and error["placed"]
    # CodeMirror counts UTF-16 units: the emoji is two, so every offset after it is one more
    start = text.index("pool - pool - pool - pool") + len("pool - pool - pool - ")
    assert (error["from"], error["to"]) == (start + 1, start + 5)


def test_warnings_are_diagnostics_with_a_place():
    text = "input 3x32x32\nconv3-8/2(pad=0) - fc10\n"
    result = analyse(text)
    assert result["ok"]
    [warning] = result["diagnostics"]
    assert warning["severity"] == "warning"
    assert text[warning["from"]:warning["to"]].startswith("conv3-8/2")


def test_stricter_limits_refuse_what_the_command_line_accepts():
    assert SERVE_LIMITS.max_nodes < netdsl.limits.DEFAULT_LIMITS.max_nodes
    text = "input 16\n" + " - ".join(["(fc16)*900"] * 6)
    assert len(netdsl.parse(text).graph) == 5401  # fine for the command line
    [error] = analyse(text)["diagnostics"]
    assert error["message"] == "the network expands to more than 5,000 nodes"
    assert text[error["from"]:error["to"]] == "(fc16)*900"
    [error] = analyse("input 16\n(fc16)*3000")["diagnostics"]
    assert error["message"] == "repeat count 3,000 is over the limit of 1,000"


@pytest.mark.parametrize("name", shipped_names())
def test_every_shipped_network_fits_the_serve_limits(name):
    path, _ = resolve_path(name)
    result = analyse(read_source(path), path=path, draw=False)
    assert result["ok"], result["diagnostics"]


def test_use_reads_only_beside_the_file(tmp_path):
    (tmp_path / "blocks.net").write_text("def pair(c) = (conv3-c)*2\n")
    (tmp_path / "secret.txt").write_text("not a network")
    main = tmp_path / "main.net"
    ok = analyse('use "blocks.net"\ninput 3x8x8\npair(4) - fc2\n', path=str(main))
    assert ok["ok"] and ok["summary"]["params"] == 4 * 27 + 4 + 4 * 36 + 4 + 2 * 256 + 2
    for use, message in [('"secret.txt"', "only .net"), ('"../x.net"', ".."),
                         ('"/etc/passwd.net"', "relative path")]:
        result = analyse(f"use {use}\ninput 3x8x8\nfc2\n", path=str(main))
        assert not result["ok"] and message in result["diagnostics"][0]["message"], use


# -- the server: token, Host, Origin --------------------------------------------------------------

def test_the_page_needs_the_token():
    client, token = client_for()
    assert client.get("/").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert client.get("/api/state").status_code == 403
    assert client.get("/static/playground.js").status_code == 403
    page = client.get(f"/?token={token}")
    assert page.status_code == 200 and f'content="{token}"' in page.text
    assert client.get(f"/static/playground.js?token={token}").status_code == 200
    assert client.get("/api/state", headers={"X-NetDSL-Token": token}).status_code == 200
    by_header = client.get("/", headers={"X-NetDSL-Token": token})  # the page's scripts get it too
    assert by_header.status_code == 200 and f'content="{token}"' in by_header.text
    assert len(token) >= 40 and token != create_app()[1]  # random per launch


def test_a_foreign_host_is_refused_even_with_the_token():
    # DNS rebinding: evil.example resolves to 127.0.0.1, so the browser sends Host: evil.example
    client, token = client_for(base=f"http://evil.example:{PORT}")
    assert client.get(f"/?token={token}").status_code == 403
    client, token = client_for(base=f"http://localhost:{PORT}")
    assert client.get(f"/?token={token}").status_code == 200
    client, token = client_for(base="http://127.0.0.1:9999")  # another port
    assert client.get(f"/?token={token}").status_code == 403


def test_bound_to_every_interface_accepts_ip_literals_but_not_names():
    hosts, any_port = allowed_hosts("0.0.0.0", PORT)
    assert any_port == PORT
    client, token = client_for(host="0.0.0.0", base=f"http://192.168.1.20:{PORT}")
    assert client.get(f"/?token={token}").status_code == 200
    client, token = client_for(host="0.0.0.0", base=f"http://attacker.example:{PORT}")
    assert client.get(f"/?token={token}").status_code == 403


def test_a_foreign_origin_is_refused():
    client, token = client_for()
    body = {"text": "input 4\nfc2"}
    assert post(client, token, "/api/check", body).status_code == 200
    assert post(client, token, "/api/check", body, Origin="http://evil.example").status_code == 403
    assert post(client, token, "/api/check", body, Origin=f"http://localhost:{PORT}").status_code == 403
    response = client.post("/api/check", content=json.dumps(body),  # no Origin on a POST
                           headers={"X-NetDSL-Token": token, "Content-Type": "application/json"})
    assert response.status_code == 403
    # a form post (what CSRF can send without CORS) is neither JSON nor tokened
    assert client.post("/api/check", data={"text": "fc2"}, headers=ORIGIN).status_code == 403
    assert post(client, token, "/api/check", body, **{"Content-Type": "text/plain"}).status_code == 415


def test_websocket_upgrades_are_guarded_too():
    from starlette.websockets import WebSocketDisconnect
    client, token = client_for()
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/api/ws", headers={"Origin": "http://evil.example"}):
            pass
    assert refused.value.code == 1008


# -- the server: headers, escaping ----------------------------------------------------------------

def test_every_response_has_a_strict_content_security_policy():
    client, token = client_for()
    for response in (client.get(f"/?token={token}"), client.get("/"),
                     post(client, token, "/api/check", {"text": "input 4\nfc2"})):
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self';" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    page = client.get(f"/?token={token}").text
    assert "<script>" not in page and "<script " in page  # only external scripts
    nonce = re.search(r"'nonce-([^']+)'", client.get(f"/?token={token}").headers[
        "content-security-policy"]).group(1)
    assert nonce not in page  # a fresh nonce per response


def test_user_text_comes_back_as_data_not_markup():
    client, token = client_for()
    hostile = 'input 3x8x8\n</script><script>alert(1)</script>\nnet a = fc2 # <img src=x onerror=alert(1)>'
    result = post(client, token, "/api/check", {"text": hostile}).json()
    assert not result["ok"]
    assert result["diagnostics"][0]["severity"] == "error"
    assert post(client, token, "/api/check", {"text": hostile}).headers["content-type"] == \
        "application/json"
    # a network's user-chosen names reach the SVG only escaped
    text = 'input 3x8x8\nnet evil = conv3-4 - fc2 # <script>\n'
    svg = post(client, token, "/api/check", {"text": text}).json()["svg"]
    assert "<script" not in svg and "onerror" not in svg


def test_bad_requests_are_refused_cleanly():
    client, token = client_for()
    assert post(client, token, "/api/check", {"text": 3}).status_code == 400
    assert post(client, token, "/api/check", {"text": "fc2", "depth": -1}).status_code == 400
    response = client.post("/api/check", content=b"{not json",
                           headers={"X-NetDSL-Token": token, "Content-Type": "application/json",
                                    **ORIGIN})
    assert response.status_code == 400
    assert client.get("/static/../app.py", params={"token": token}).status_code == 404
    assert client.get("/static/app.py", params={"token": token}).status_code == 404
    assert client.get("/api/shipped/..%2Fmodules", headers={"X-NetDSL-Token": token}).status_code == 404


def test_a_huge_body_is_refused_before_it_is_read():
    from netdsl.serve.app import MAX_BODY_BYTES
    client, token = client_for()
    huge = json.dumps({"text": "#" * (MAX_BODY_BYTES + 1)})
    assert post(client, token, "/api/check", json.loads(huge)).status_code == 413
    fits = {"text": "input 4\nfc2 # " + "x" * SERVE_LIMITS.max_source_chars}
    result = post(client, token, "/api/check", fits).json()  # read, then refused by the limits
    assert "characters" in result["diagnostics"][0]["message"]


def test_shipped_networks_open_by_name_only():
    client, token = client_for()
    state = client.get("/api/state", headers={"X-NetDSL-Token": token}).json()
    assert "vgg16" in state["shipped"] and state["file"] is None and not state["writable"]
    vgg = client.get("/api/shipped/vgg16", headers={"X-NetDSL-Token": token}).json()
    assert vgg["text"] == read_source(resolve_path("vgg16")[0])
    assert client.get("/api/shipped/passwd", headers={"X-NetDSL-Token": token}).status_code == 404


def test_check_answers_with_the_summary_and_the_drawing():
    client, token = client_for()
    result = post(client, token, "/api/check", {"text": "input 3x32x32\nconv3-8 - pool - fc10",
                                                "seq": 7}).json()
    assert result["ok"] and result["seq"] == 7
    assert result["summary"]["params"] == netdsl.parse("conv3-8 - pool - fc10", input="3x32x32").params
    assert result["svg"].lstrip().startswith("<?xml") and 'id="ir1"' in result["svg"]


def test_explain_answers_with_one_layers_worked_arithmetic():
    client, token = client_for()
    text = "input 3x227x227\nnet a = conv11-96/4(pad=0) - maxpool3/2 - fc10\nnet b = fc10\n"
    result = post(client, token, "/api/explain", {"text": text, "net": "a", "node": 1}).json()
    assert result["name"] == "conv1" and result["shape"] == [96, 55, 55]
    lines = {line["quantity"]: line for line in result["lines"]}
    assert lines["size"]["text"] == "(227 + 2*0 - 11)/4 + 1 = 55   (floor mode)"
    assert (lines["params"]["formula"], lines["params"]["value"]) == ("11*11*3*96 + 96", 34944)
    assert lines["MACs"]["value"] == 105_415_200 and lines["im2col"]["value"] == [363, 3025]
    assert "rf          1 + (11-1)*1 = 11" in result["text"]
    pool = post(client, token, "/api/explain", {"text": text, "net": "a", "node": 2}).json()
    assert [line["value"] for line in pool["lines"] if line["quantity"] == "rf"] == [19]
    # the text decides, as for /api/check: another net, a mistake, a layer that is not there
    other = post(client, token, "/api/explain", {"text": text, "net": "b", "node": 1}).json()
    assert other["name"] == "fc1" and other["inputs"] == [[3, 227, 227]]
    broken = post(client, token, "/api/explain", {"text": "input 3x8x8\nconv9-4(pad=0)", "node": 1})
    assert broken.status_code == 400 and "empty" in broken.json()["error"]
    missing = post(client, token, "/api/explain", {"text": text, "net": "a", "node": 9})
    assert missing.status_code == 400 and missing.json()["error"] == "no layer 9 in a"
    for bad in ({"text": text}, {"text": text, "node": -1}, {"text": text, "node": True},
                {"text": 3, "node": 1}, {"text": text, "node": "1"}):
        assert post(client, token, "/api/explain", bad).status_code == 400
    # guarded as every other request: a token and the page's own Origin
    assert post(client, token, "/api/explain", {"text": text, "node": 1},
                Origin="http://evil.example").status_code == 403
    assert post(client, "wrong", "/api/explain", {"text": text, "node": 1}).status_code == 403


# -- the server: saving ------------------------------------------------------------------------------

def test_save_writes_file_and_nothing_else(tmp_path):
    file = tmp_path / "mine.net"
    file.write_text("input 4\nfc2\n")
    client, token = client_for(str(file))
    state = client.get("/api/state", headers={"X-NetDSL-Token": token}).json()
    assert state == {**state, "file": "mine.net", "text": "input 4\nfc2\n", "writable": True}
    response = post(client, token, "/api/save", {"text": "input 4\nfc3\n", "path": "/tmp/other.net"})
    assert response.status_code == 200 and file.read_text() == "input 4\nfc3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.net"]  # no temporary left behind
    too_big = "#" * (SERVE_LIMITS.max_source_chars + 1)
    assert post(client, token, "/api/save", {"text": too_big}).status_code in (400, 413)
    assert file.read_text() == "input 4\nfc3\n"


def test_save_needs_a_file():
    client, token = client_for()
    response = post(client, token, "/api/save", {"text": "fc2"})
    assert response.status_code == 403 and "no FILE" in response.json()["error"]


def test_another_host_is_read_only_unless_allowed(tmp_path):
    file = tmp_path / "mine.net"
    file.write_text("input 4\nfc2\n")
    base = f"http://10.1.2.3:{PORT}"
    client, token = client_for(str(file), host="10.1.2.3", base=base)
    response = post(client, token, "/api/save", {"text": "input 4\nfc9\n"}, Origin=base)
    assert response.status_code == 403 and "read-only" in response.json()["error"]
    assert file.read_text() == "input 4\nfc2\n"
    client, token = client_for(str(file), host="10.1.2.3", allow_save=True, base=base)
    assert post(client, token, "/api/save", {"text": "input 4\nfc9\n"}, Origin=base).status_code == 200
    assert file.read_text() == "input 4\nfc9\n"


# -- the command ------------------------------------------------------------------------------------

def test_serve_refuses_a_file_that_is_not_a_net_file(tmp_path, capsys):
    from netdsl.cli import main
    assert main(["serve", str(tmp_path / "x.txt"), "--port", "0"]) == 1
    assert "edits a .net file" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing" / "x.net"), "--port", "0"]) == 1


def test_serve_prints_a_tokened_loopback_address_and_answers(tmp_path):
    import urllib.request
    file = tmp_path / "a.net"
    file.write_text("input 4\nfc2\n")
    process = subprocess.Popen([sys.executable, "-m", "netdsl.cli", "serve", str(file), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "a.net" in process.stdout.readline()
        address = process.stdout.readline().split()[-1]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{40,}", address), address
        with urllib.request.urlopen(address, timeout=30) as response:
            assert response.status == 200 and b"playground.js" in response.read()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_without_the_serve_extra_the_command_says_what_to_install():
    code = ("import sys; sys.modules['starlette'] = None; from netdsl.cli import main; "
            "sys.exit(main(['serve', '--port', '0']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "netdsl serve needs the serve extra (starlette is missing)" in result.stderr
    assert "pip install 'netdsl[serve]'" in result.stderr and "Traceback" not in result.stderr


def test_other_commands_do_not_import_the_server():
    code = ("import sys; from netdsl.cli import main; main(['check', 'lenet5', '-q']); "
            "sys.exit(3 if {'starlette', 'uvicorn', 'netdsl.serve'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_the_wheel_ships_the_bundle(tmp_path):
    from conftest import ROOT
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("netdsl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("playground.js", "playground.css", "index.html", "LICENSES.txt"):
        assert f"netdsl/serve/static/{name}" in names
    bundled = zipfile.ZipFile(wheel).read("netdsl/serve/static/playground.js")
    assert bundled == (ROOT / "netdsl" / "serve" / "static" / "playground.js").read_bytes()


def test_check_opens_only_the_boxes_asked_for_and_refuses_a_bad_list():
    client, token = client_for()
    path, _ = resolve_path("resnet50")
    resnet = read_source(path)
    shut = post(client, token, "/api/check", {"text": resnet, "depth": 1}).json()
    opened = post(client, token, "/api/check", {"text": resnet, "depth": 1, "opened": [5]}).json()
    assert "box5" in shut["boxes"] and "box8" not in shut["boxes"]
    assert {"box5", "box8", "box17"} <= set(opened["boxes"])  # box 5 open; box 17 still shut
    assert opened["owners"][8] == "box8" and shut["owners"][8] == "box5"
    for bad in ("5", [True], [-1], list(range(300))):
        assert post(client, token, "/api/check", {"text": resnet, "opened": bad}).status_code == 400, bad
