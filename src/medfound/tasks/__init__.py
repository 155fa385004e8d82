"""What users ask for (embed, export, demo), composed from io, data and models."""
