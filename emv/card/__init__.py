"""The virtual card: profiles (what a card is), personalisation (its data and keys), and
the card itself as a sans-I/O APDU processor with a persistent state."""
