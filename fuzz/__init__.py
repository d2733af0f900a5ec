"""Coverage-guided fuzzing of dlmsd's decoders and loaders (atheris; see fuzz/README.md)."""
