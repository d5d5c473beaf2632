"""What the commands do, as a library: output planning, face-aligned editing, doctor and info reports."""
