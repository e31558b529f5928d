"""The issuer (``issuer/``) as an ISO 8583 network host over the back office's database
(issuerhost/README.md): ``handler`` answers decoded messages, ``host`` serves TCP."""
