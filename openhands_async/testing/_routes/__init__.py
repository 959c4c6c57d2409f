"""FakeCloud's endpoints, one module per endpoint group; each module is one `RouteGroup`.

- `probes`: /alive, /health, /ready.
- `start`: start, stream-start, and the start-task batch get / search / count.
- `conversations`: conversation batch get / search / count, the web app's page, and one
  conversation's endpoints (send-message, update, delete, download, git, file).
- `events`: a conversation's events search / count / batch get.
- `sandboxes`: sandbox search / batch get / start / pause / resume / delete.
- `users`: users/me.
- `legacy`: the V0 routes under /api/conversations.

Adding routes: write a new module here with one `RouteGroup` subclass (`@route` methods;
the handlers read and change state only through `self.ctx`, answer with `_responses`), and
add the class to `_app.GROUPS`. Route modules import the modules below them (`_context`,
`_routing`, `_responses`, `_timeline`, `_events`, `_render`, `_state`, `_validation`,
`_plan`, `_wire`, `_constants`), never each other, `_app` or `_cloud`. Planned:

- `agent_server.py` (issue 16): the agent-server WebSocket of a running conversation,
  `/agent-server/{sandbox_id}/sockets/events/{conversation_id}` (conversation URLs already
  point there). `access="open"`: it checks the key in its first frame itself with
  `ctx.key_matches` (or the conversation's `session_api_key`); it can follow the
  conversation with `visible()` and `ctx.sleep_until(next event time)`, which ends at stop.
- issue 20, a module each: `settings.py`, `profiles.py`, `secrets.py`, `git.py`,
  `sandbox_specs.py`, `skills.py`, `config.py`. Their state: a record module beside
  `_state.py` and one field on `Context`.
"""
