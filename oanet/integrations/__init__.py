"""oanet on other engines: :mod:`oanet.integrations.ray` (Ray Data's ``map_batches``). Importing this
package (and its modules) needs none of those engines: each is imported when it is used."""

__all__ = ["ray"]
