"""ASR model components that extend ESPnet's (encoders)."""
