"""The model service: detection, faces and reverse prompts for the manifesting engine."""
