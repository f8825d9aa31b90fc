"""Source datasets as STAC (sensor registry, builders, sample world) and the store format."""
