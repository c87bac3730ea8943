"""Offline patch feature extraction (input of two-stage MIL training): `extract.extract` encodes
a patch store, `shards` cuts a dataset into extraction jobs and joins their manifests, `h5`
imports features made elsewhere. Nothing is imported here: the workflow plans shards at parse
time and combines their manifests without loading torch."""
