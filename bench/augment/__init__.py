"""Views: batched on-device image operations, each method's views, the reference (lightly) path."""
