"""breachmatch: privacy-preserving breach matching for healthcare.

The package holds the core both sides must share byte for byte (identifier
normalisation, the RFC 9497 OPRF, the breach-filter format), the generated gRPC
stubs (``breachmatch.v1``), and the hospital SDK and CLI built on them.
"""

__version__ = "0.1.0"
