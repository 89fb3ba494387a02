"""options stage."""
