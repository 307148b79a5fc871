"""GeoTIFF reading and writing, datasets, transforms and the simulated Earth."""
