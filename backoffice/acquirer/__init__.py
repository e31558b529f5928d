"""The back office as an ISO 8583 acquirer: the network adapter of ``IssuerGateway``.

See backoffice/README.md, "The bank over the wire".
"""
