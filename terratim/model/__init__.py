"""The TerraMind network: size table, embeddings, the encoder-decoder and the backbone."""
