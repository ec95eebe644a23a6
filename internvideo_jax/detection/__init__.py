"""Spatio-temporal action detection (AVA-style): boxes, the RoIAlign head's data, frame-mAP."""
