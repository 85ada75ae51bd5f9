"""Stored files and the storage they use.

Every object an organization keeps in the blob store has a `StoredBlob` row: its key, size,
hash, declared type and display name. The rows are what storage quotas count. The object is
written first and the row second, so a row always points at a complete object; an object
without a row (a crash between the two, a failed request) is removed by the garbage collector
after a grace period, and the integrity report lists both kinds of mismatch (P5).
"""
