"""Export to PyTorch: `source` (a trained run to export), `mapping` (the Flax -> torch
table), `exporter` (writes the export directory), `verify` (runs both models on one batch),
`modeling_av_unified` (the PyTorch model, copied into the export; it imports only torch,
numpy and safetensors). See docs/MODEL.md, Export."""
