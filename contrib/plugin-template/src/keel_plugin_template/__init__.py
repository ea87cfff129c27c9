"""A template Keel plugin: copy it to start your own."""
