"""Framework integrations: carto's Recorder inside someone else's training loop.

- `carto.integrations.hf`: Hugging Face `transformers.Trainer`
  (`CartoTrainer` + `CartoCallback`).
- `carto.integrations.lightning`: PyTorch Lightning (`CartoCallback`).

Each module imports its framework only when imported itself, so
`import carto` never needs transformers or lightning.
"""

__all__ = ["hf", "lightning"]
