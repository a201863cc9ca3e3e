"""Video token compression methods; importing this package registers them."""
