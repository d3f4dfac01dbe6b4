"""`netdsl serve`: a live playground in the browser (editor, drawing, summary, diagnostics).

Needs the `serve` extra (starlette, uvicorn); nothing else in netdsl imports this package.
"""
