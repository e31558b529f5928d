"""The card's bank: financial accounts, card lifecycle, cryptogram verification, authorization."""
