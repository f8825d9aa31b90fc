"""The GeoPile-2 pipeline: the stages discover, fetch, coregister, shard and validate."""
