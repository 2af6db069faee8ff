"""render/: the camera convention, mesh loading, renderers, procedural objects, object sources (files,
folders, Objaverse, Sweet Home 3D catalogues) and their curation, the orbit-dataset format (read, write,
validate, render at scale), and the shared home every package imports (`render.common`, `render.images`,
`render.raster`, `render.meshes`, `render.cameras`, `render.sources`; docs/architecture.md)."""
