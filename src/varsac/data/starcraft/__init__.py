"""StarCraft II marine counting: one folder layout, and what writes and reads it.

- ``layout``: the folder (predictions.csv, fullscreen/, minimap/) and its columns;
- ``scenes``: frames drawn offline (``varsac data starcraft``);
- ``recorder``: frames recorded from the game (``varsac data starcraft source=game``);
- ``dataset``: the datamodule that trains on such a folder (``data=starcraft``).
"""
