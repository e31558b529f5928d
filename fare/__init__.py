"""The fare engine: GTFS-Fares v2 rules, journeys, transfers, caps, rider categories (pure)."""
