"""Reconstruction from posed views: checkpoint loading, the feed-forward pipeline and its outputs."""
