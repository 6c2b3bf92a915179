"""The control plane: a JSON-RPC 2.0 server in the serving loop, on a Unix
socket (`sipr ctl`) and optionally on HTTP (`/rpc`, `/metrics`, the status
page). See docs/operations.md.

`server.ControlServer` owns the listeners (`unix`, `http`) and the method
registry (`rpc`, `commands`); `config` holds what they share.
"""
