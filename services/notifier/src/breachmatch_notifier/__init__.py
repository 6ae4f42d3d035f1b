"""breachmatch notifier: one clear notice per affected patient, on a channel they trust.

`breachmatch_notifier.notice` renders and validates the notices (templates in
``templates/``), `breachmatch_notifier.channels` delivers them. The gRPC
intake, the JetStream worker and the ledger build on these two.
"""

__version__ = "0.1.0"
