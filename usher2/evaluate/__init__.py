"""Statistics and image-quality metrics."""
