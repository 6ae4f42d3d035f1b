"""Development and test scaffolding that ships with the package.

`make demo` and the test suites both need a throw-away PKI and a real
nats-server; keeping them here (not under tests/) means the demo and the tests
exercise exactly the same setup code. Nothing in this subpackage is meant for
production use.
"""

from breachmatch_dev.nats_server import NatsServer
from breachmatch_dev.pki import DevPki, make_dev_pki

__all__ = ["DevPki", "NatsServer", "make_dev_pki"]
