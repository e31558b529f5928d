"""ISO 8583 between a transit acquirer and the card's bank: the dialect as data, the codec,
the framing, and a load generator (isolink/README.md).  Imports ``emv`` only."""
