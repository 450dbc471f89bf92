"""Model registry schema. Built by the model-registry issue; empty in the foundation."""
