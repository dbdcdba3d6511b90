"""The embedded `toy` model: procedural shapes data, its training, and ShapesBench."""
