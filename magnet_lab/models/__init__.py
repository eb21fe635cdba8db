"""Generators that magnet_lab samples from: small CPA toys with known targets (``toy``) and
pre-trained image generators (added alongside)."""
