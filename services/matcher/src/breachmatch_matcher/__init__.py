"""breachmatch matcher: OPRF evaluation, budgets and breach distribution over gRPC.

The only service a hospital talks to for matching. It sees blinded group
elements and nothing else (docs/architecture.md, promise 1); `app.MatcherApp` wires the
pieces, `cli.main` is the ``breachmatch-matcher`` command.
"""
