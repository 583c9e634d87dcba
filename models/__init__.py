"""The shipped model bundles, installed as the package `malaria_edge_models` (setup.cfg maps it to this folder) so
that `pip install .` in a venv, with --user or editable, puts them where importlib.resources finds them
(edge_app.model.shipped_path). Not code: the model card is README.md here."""
