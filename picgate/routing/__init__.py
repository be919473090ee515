"""Many upstreams, many models: ``MODELS_FILE`` (``models_file``) and the per-model route
(``table``). Without a models file nothing here runs and the single upstream of the settings
takes every model, as before."""
