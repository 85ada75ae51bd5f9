"""Cross-cutting pieces that know no domain: database, errors, logging, metrics, HTTP middleware,
pagination, ids and the clock. Nothing here imports from the rest of Atelier."""
