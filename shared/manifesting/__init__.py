"""The manifesting engine (E1–E7): from reference photos to a tagged, described,
face-grouped asset registry. The models run behind the Protocols in `ports`."""
