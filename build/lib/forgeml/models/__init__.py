"""Models: plain nn.Modules (nets.py), the LightningModule (module.py), the exported artifact."""
