"""The job store: keyword-only functions on a session, one transaction each.

Split along its seams, each a module a caller imports by name, so a reader sees which part of
the store it touches: `tenants` (keys), `submission`, `ledger` (a step's start and outcome),
`waits` (held and waiting steps), `events`, `queries`, `recovery` (what the sweeper finds),
`tools`, `agents`, `sessions`, and `tables` (the tables and the values passed between them).
"""
