"""Local learned sentinel: a RouteDecision from a small in-process model (numpy + tokenizers)."""
