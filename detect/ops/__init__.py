"""Pure tensor operations on boxes."""
