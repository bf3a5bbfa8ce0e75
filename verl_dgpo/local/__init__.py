"""CPU support for verl 0.9.1: imported only when the local CPU preset is selected, never by the plugin."""
