"""The transit operator's transaction core: ingestion, fares, deferred authorization, ledger."""
