"""The generation pipeline (G1–G5): storyboard → keyframes → clips → stitch, as Cloud Tasks
stages over Firestore state, with providers behind the Protocols in `ports`."""
