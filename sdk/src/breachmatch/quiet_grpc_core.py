"""Keep gRPC core's own log lines out of our logs; imported before gRPC by every command.

gRPC's C core writes plain ``I1129 19:37:17.19 ssl_transport_security.cc...``
lines straight to stderr (a client with a foreign certificate is enough),
which breaks the one-JSON-object-per-line logs that Kubernetes collects. Its
verbosity can only be set through ``GRPC_VERBOSITY`` *before* gRPC is first
imported, so each command's module imports this one ahead of anything that
imports gRPC. What those lines reported still reaches the user: refused calls
and handshakes surface as explained errors on the client side. An operator who
wants them anyway sets ``GRPC_VERBOSITY`` (e.g. ``INFO``) themselves.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
