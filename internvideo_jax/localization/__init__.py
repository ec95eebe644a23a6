"""Temporal action localization: features over untrimmed videos, the ActionFormer-style head, the ActivityNet evaluation."""
