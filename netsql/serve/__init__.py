"""``netsql serve``: the resident engine (server.py) and the one-liner's side of it
(client.py), docs/serve.md."""
